"""Editor: qwend's language server (pygls); it asks the daemon and never loads a model."""
