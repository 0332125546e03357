"""`python -m kgsim`: the same as the `kgsim` command."""
import sys

from kgsim.cli import main

sys.exit(main())
