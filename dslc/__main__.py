"""`python -m dslc ...`: the `dslc` command (`dslc.cli.main`), with its exit code."""
import sys

from dslc.cli import main

if __name__ == "__main__":
    sys.exit(main())
