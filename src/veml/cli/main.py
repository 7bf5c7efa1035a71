"""``veml``: the command line (DESIGN.md section 8 is its contract).

Thin: parse arguments, call the Python API, render.  Exit codes: 0 success, 1 error (one
``error: …`` line on stderr, a traceback only with ``--debug``), 2 bad usage.  With ``--json``
stdout holds exactly one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from typing import Any, Callable, Sequence

import veml
from veml.cli import aliases as alias_cmds
from veml.cli import data as data_cmds
from veml.cli import interop as interop_cmds
from veml.cli import doctor as doctor_cmds
from veml.cli import examples
from veml.cli import lifecycle as lifecycle_cmds
from veml.cli import ml as ml_cmds
from veml.cli import repo as repo_cmds
from veml.cli.common import Context
from veml.errors import VemlError


def _common(json_default: Any = argparse.SUPPRESS) -> argparse.ArgumentParser:
    """Options every command takes, accepted before or after the sub-command."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--repo", metavar="PATH", default=json_default, help="repository (default: nearest .veml/ upward, or $VEML_REPO)")
    p.add_argument("--json", action="store_true", default=json_default, help="print one JSON document on stdout")
    p.add_argument("--debug", action="store_true", default=json_default, help="show tracebacks")
    p.add_argument("--trust-pickle", action="store_true", default=json_default,
                   help="load pickled scikit-learn models (they can run code): as VEML_TRUST_PICKLE=1")
    return p


def package_version() -> str:
    """This VeML's version, from the installed package's metadata (``veml.__version__`` where it has none)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("veml")
    except PackageNotFoundError:
        return veml.__version__


class _VersionAction(argparse.Action):
    """``--version``: the package metadata is read only when asked for (importlib.metadata costs 10 ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help=help or "show program's version number and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"veml {package_version()}")  # on stdout, as argparse's own version action prints it
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    top_common = _common(None)
    for a in top_common._actions:
        if a.dest in ("json", "debug", "trust_pickle"):
            a.default = False
    parser = argparse.ArgumentParser(prog="veml", description="Version management for the whole ML lifecycle.", parents=[top_common])
    parser.add_argument("--version", action=_VersionAction)
    common = _common()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    repo_cmds.register(sub, common)
    data_cmds.register(sub, common)
    ml_cmds.register(sub, common)
    lifecycle_cmds.register(sub, common)
    alias_cmds.register(sub, common)
    interop_cmds.register(sub, common)  # after ml's: it adds `export mlflow` to `export`
    doctor_cmds.register(sub, common)
    examples.attach(parser)  # last: every command registered above gets its --help example
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a command stops the way Ctrl-C stops it."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _pickle_trust(on: bool) -> contextlib.AbstractContextManager[None]:
    if not on:  # the scikit-learn adapter (numpy) is imported only when it matters
        return contextlib.nullcontext()
    from veml.adapters.sklearn_adapter import trusting_pickle

    return trusting_pickle(True)


#: what str.splitlines() breaks a line at: escaped in an error message, which is one line whatever names it quotes
_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def _one_line(text: str) -> str:
    return text.translate(_BREAKS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Context(repo_path=args.repo, as_json=bool(args.json), debug=bool(args.debug))
    handler: Callable[[Context, argparse.Namespace], Any] = args.handler
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        with _pickle_trust(bool(args.trust_pickle)):
            result = handler(ctx, args)
    except VemlError as exc:
        if ctx.debug:
            raise
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except Terminated:
        print("error: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless --debug, as the contract says
        if ctx.debug:
            raise
        print(f"error: internal error ({type(exc).__name__}: {_one_line(str(exc))}); rerun with --debug for a traceback", file=sys.stderr)
        return 1
    finally:
        try:
            ctx.close()
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    if isinstance(result, int):
        return result
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()


__all__ = ["main", "build_parser", "json"]
