#!/usr/bin/env python3
"""Transient's entry point: ``python run.py --help``."""

import sys

from server.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
