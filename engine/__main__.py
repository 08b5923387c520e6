"""``python -m atelier.engine`` is the ``atelier`` command."""

import sys

from atelier.engine.cli import main

sys.exit(main())
