"""The ``graphprune`` command (``main``); every subcommand calls the Python API."""

from graphprune.cli.main import main

__all__ = ["main"]
