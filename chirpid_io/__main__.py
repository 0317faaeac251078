"""``python -m chirpid_io ...`` is the ``chirpid-io`` command."""

import sys

from .cli import main

sys.exit(main())
