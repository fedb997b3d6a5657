"""`python -m gauged` is the `gauged` command."""

import sys

from gauged.cli import main

sys.exit(main())
