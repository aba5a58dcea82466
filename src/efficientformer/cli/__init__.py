"""The `efficientformer` command line (also `python -m efficientformer`).

Each command lives in its own module of this package with three names: `HELP` (one line),
`add_arguments(parser)` and `run(args) -> int` (the exit code). Modules import only the standard
library at the top, so `--help` is instant and works without any backend installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module in this package, in the order `--help` lists them
COMMANDS = {
    "predict": "predict",
    "convert": "convert",
    "export": "export",
    "bench": "bench",
    "train": "train",
    "eval": "evaluate",
    "info": "info",
}


def require_positive(*flags: tuple[str, int]) -> None:
    """Refuse counts below 1, naming each flag: `require_positive(("--batch-size", args.batch_size))`. The one
    check of the commands' count options, raised before any model or image is read."""
    if all(value >= 1 for _, value in flags):
        return
    from ..errors import InputError

    names = " and ".join(name for name, _ in flags)
    values = " and ".join(str(value) for _, value in flags)
    raise InputError(f"{names} must be positive, got {values}.")


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="efficientformer",
        description="EfficientFormer vision models: predict, convert checkpoints, export, benchmark, train "
                    "and evaluate. Run `efficientformer COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"efficientformer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        doc = (module.__doc__ or module.HELP).strip()
        command = sub.add_parser(name, help=module.HELP, description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    from ..errors import CheckpointError, ConfigError, InputError, MissingDependencyError

    try:
        return int(args._run(args) or 0)
    except (CheckpointError, ConfigError, InputError, MissingDependencyError, FileNotFoundError) as err:
        print(f"efficientformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
