"""``python3 -m connector.cli``: the same as the ``postmaster-bridge`` command."""

import sys

from connector.cli import main

sys.exit(main())
