"""``python -m chirpid_io ...`` runs the ``chirpid-io`` command (e.g. under torchrun)."""

import sys

from .cli import main

sys.exit(main())
