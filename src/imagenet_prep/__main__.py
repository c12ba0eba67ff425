"""`python -m imagenet_prep` runs the command-line interface."""

import sys

from imagenet_prep.cli import main

sys.exit(main())
