"""The ``elman`` command: ``elman forecast``, ``elman classify``, ``elman generate``,
``elman translate``, ``elman longmemory`` and ``elman export-onnx``.

Each sub-command's module (``elman.tasks.<name>``, ``elman.interop.onnx``) provides ``HELP``
(one line), ``add_arguments(parser)`` and ``run(args) -> int``. Run ``elman <command> --help``
for the options.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ._validate import CommandError
from ._version import __version__

__all__ = ["main"]

# An explicit table: the command line never imports a module named by its input.
COMMANDS = {"forecast": "elman.tasks.forecast", "classify": "elman.tasks.classify",
            "generate": "elman.tasks.generate", "translate": "elman.tasks.translate",
            "longmemory": "elman.tasks.longmemory", "export-onnx": "elman.interop.onnx"}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the task docstrings' layout and show each option's default once: not where the help
    text already says it, and not for flags (off) or options without one (None)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elman", description="Train recurrent networks (RNN, GRU, LSTM) on real sequence "
        "problems. Each command runs on bundled real data when given no file.")
    parser.add_argument("--version", action="version", version=f"elman {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:       # one broken command must not take the others down
            p = sub.add_parser(name, help=f"(unavailable: {e})")
            p.set_defaults(run=lambda args, e=e, name=name: _unavailable(name, e))
            continue
        p = sub.add_parser(name, help=module.HELP,
                           description=getattr(module, "DESCRIPTION", module.__doc__),
                           formatter_class=_HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def _unavailable(name: str, error: Exception) -> int:
    print(f"elman {name}: cannot load the command: {error}", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    """Run one command. A user mistake ends in one ``error: ...`` line on stderr and exit status
    2, as argparse's own usage errors do (the :class:`CommandError` is re-raised after printing,
    so a caller of ``main`` still sees it)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CommandError as e:
        print(e, file=sys.stderr, flush=True)
        raise
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
