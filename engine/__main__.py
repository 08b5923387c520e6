"""``python -m engine`` is the ``atelier`` command."""

import sys

from engine.cli import main

sys.exit(main())
