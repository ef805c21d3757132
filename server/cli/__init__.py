"""Command-line entry points behind ``run.py``."""
