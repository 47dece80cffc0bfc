"""`python -m hyperthumbnail ...` is the same as the `hyperthumbnail` console script."""
import sys

from .cli import main

sys.exit(main())
