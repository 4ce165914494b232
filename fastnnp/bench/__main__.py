"""``python -m fastnnp.bench``."""

import sys

from .cli import main

sys.exit(main())
