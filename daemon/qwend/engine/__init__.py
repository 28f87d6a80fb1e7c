"""Engine: backends, the generation thread, and the meaning of each endpoint."""
