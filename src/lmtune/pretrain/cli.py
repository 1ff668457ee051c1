"""`lmtune pretrain`: its arguments and its entry point. Keep imports here light; the work is imported in `run`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="*", help="not built yet")


def run(args: argparse.Namespace) -> None:
    from lmtune.errors import LmtuneError

    raise LmtuneError("`lmtune pretrain` is not built yet")
