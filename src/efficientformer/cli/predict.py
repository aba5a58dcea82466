"""Not built yet."""

from __future__ import annotations

import argparse

HELP = "(not available yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    print("this command is not available yet")
    return 1
