"""``python -m checkpointd``: the ``checkpointd`` command."""

import sys

from checkpointd.cli import main

sys.exit(main())
