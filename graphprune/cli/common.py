"""What every subcommand shares: a parser whose usage errors are one line, and the common flags."""

from __future__ import annotations

import argparse

from graphprune.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a :class:`UsageError` (one line, exit 2) rather than a usage dump."""

    def error(self, message: str):  # noqa: D102
        raise UsageError(f"{message} (see '{self.prog} --help')")


def add_common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--input-shape", action="append", metavar="NAME:D0,D1,...",
                   help="static shape for an input with dynamic dims, e.g. input:1,3,224,224 (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("-v", "--verbose", action="store_true", help="more detail; tracebacks on errors")
    return p
