"""Shared pieces of the command line (see ``ddpmkit.cli``).

Every command has ``--help`` with an example, ``--seed``, ``--device`` and ``--json``. Exit codes:
0 ok, 2 bad input (one line on stderr naming the problem and the fix), 1 a bug (traceback).
Helpers shared by the command modules.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys

from ..errors import InputError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {v}")
    return v


def nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {v}")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def threads_value(text: str) -> str | int:
    if text == "auto":
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number >= 0, got {text!r}") \
            from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number >= 0, got {v}")
    return v


def add_common(p: argparse.ArgumentParser) -> None:
    """--seed, --device, --json: on every command."""
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="where to run (default auto: cuda if available)")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON result")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars or status lines (the result is still printed)")
    p.add_argument("--threads", type=threads_value, default="auto", metavar="N|auto",
                   help="intra-op CPU threads (default auto: the cores idle at start, at "
                        "least 1; 0 = torch's own choice, one per core)")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA device is available; "
                         "use --device cpu")
    return name


def emit_json(obj) -> None:
    """Write strict JSON (NaN/Inf become null) to stdout."""
    from ..io import finite_json

    sys.stdout.write(json.dumps(finite_json(obj), indent=2) + "\n")


def exit_code(e: BaseException) -> int:
    """The exit code for an exception raised by a command: 2 bad input (InputError, a path
    problem, a full disk), 130 interrupted, 1 anything else (a bug: ``main`` re-raises it)."""
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, (InputError, FileNotFoundError, PermissionError, IsADirectoryError,
                      NotADirectoryError)):
        return 2
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return 2
    return 1


def on_main(dist, fn) -> int:
    """Run ``fn()`` on rank 0 only (writing, printing); every rank returns the same exit code.

    Rank 0 re-raises an exception of ``fn`` (so ``main`` reports it); the other ranks return
    the code it maps to, so that every rank of a torchrun job ends with the same code."""
    import torch

    err, code = None, 0
    if dist.is_main:
        try:
            fn()
        except BaseException as e:  # rank 0 reports it below; every rank gets its code
            err, code = e, exit_code(e)
    code = int(dist.broadcast(torch.tensor([code], dtype=torch.int64)).item())
    if err is not None:
        raise err
    return code


def error_line(command: str, e: BaseException) -> str:
    """The one stderr line ``main`` prints for an exception with exit code 2 or 130."""
    if isinstance(e, KeyboardInterrupt):
        return f"ddpmkit {command}: interrupted"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        where = f" writing {e.filename}" if e.filename else ""
        return (f"ddpmkit {command}: error: no space left{where} ({e.strerror}); free "
                "some space or write elsewhere (nothing was left half-written)")
    if isinstance(e, OSError):
        return f"ddpmkit {command}: error: {e.strerror or e}: {e.filename}"
    return f"ddpmkit {command}: error: {e}"
