"""`python -m mintleaf.cli`."""

import sys

from . import main

sys.exit(main())
