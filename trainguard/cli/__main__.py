"""``python -m trainguard.cli``: the same as the ``trainguard`` console script."""

import sys

from trainguard.cli.main import main

sys.exit(main())
