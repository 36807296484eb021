"""python -m lenet_lib report | notebooks | list: the command line lives in running/cli.py."""
import sys

from lenet_lib.running.cli import main

if __name__ == "__main__":
    sys.exit(main())
