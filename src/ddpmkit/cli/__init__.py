"""Command line: a thin argparse layer over the public Python API.

Every command has ``--help`` with an example, ``--seed``, ``--device`` and ``--json``. Exit codes:
0 ok, 2 bad input (one line on stderr naming the problem and the fix), 1 a bug (one line; the
traceback with ``ddpmkit --debug COMMAND`` or ``DDPMKIT_DEBUG=1``), 130 interrupted.
Each command is one module of this package with ``add_parser(sub)``; ``COMMANDS`` lists them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import InputError
from . import calibrate, data, demo, equivalence, eval, export, report, sample, train
from ._common import Parser, error_line, exit_code, formatter, resolve_device

COMMANDS = [demo, train, sample, eval, export, report, equivalence, calibrate, data]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ddpmkit", formatter_class=formatter,
        description="ddpmkit: DDPMs with exact maths. The network is a denoiser.",
        epilog="examples:\n  ddpmkit equivalence --json\n  ddpmkit calibrate --case gaussian",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"ddpmkit {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an internal error (or DDPMKIT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("DDPMKIT_DEBUG", "") not in ("", "0")
    if getattr(args, "quiet", False):
        os.environ["DDPMKIT_PROGRESS"] = "off"  # every progress bar goes through ddpmkit.progress
    try:
        if hasattr(args, "threads"):
            from ..threads import apply_threads

            args.threads = apply_threads(args.threads)  # the number in use, for --json
        if hasattr(args, "device"):
            args.device = resolve_device(args.device)
        return int(args.func(args) or 0)
    except (InputError, OSError, KeyboardInterrupt) as e:
        code = exit_code(e)
        if code == 1:  # an OSError that is not bad input: a bug or the machine
            return _internal_error(args.command, e, debug)
        print(error_line(args.command, e), file=sys.stderr)
        return code
    except Exception as e:  # a bug: one line, the traceback only when asked for
        return _internal_error(args.command, e, debug)


def _internal_error(command: str, e: BaseException, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exception(e)
    else:
        where = ""
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
        print(f"ddpmkit {command}: internal error: {type(e).__name__}: {e}{where} (a bug; "
              "rerun with 'ddpmkit --debug ...' or DDPMKIT_DEBUG=1 for the traceback and "
              "report it)", file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
