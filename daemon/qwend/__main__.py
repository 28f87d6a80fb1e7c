"""Editor: ``python -m qwend`` runs the CLI."""

import sys

from qwend.cli import main

sys.exit(main())
