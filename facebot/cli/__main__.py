"""`python -m facebot.cli`: the same as the `facebot` command."""
import sys

from facebot.cli import main

sys.exit(main())
