"""Entry point of the ``lben-ode`` command: dispatch, quick top-level help and one-line errors.

This module imports neither Lightning nor the models: ``lben-ode --help`` and a bad subcommand are
answered at once, and Lightning (several seconds to import) is loaded only for a subcommand that
needs it (:mod:`.cli` for ``fit | validate | test | predict``, :mod:`.robustness_cli` for
``robustness``).

Errors a user can fix (the library's :class:`~lben_ode.errors.LBENError`, Lightning's
configuration errors, bad command-line values) end the command with their message and exit status
2. ``--traceback`` (anywhere on the command line) or ``LBEN_ODE_TRACEBACK=1`` shows the full
traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TypeVar

from lben_ode.errors import LBENError

T = TypeVar("T")

#: Environment variable that, set to anything but ``0`` or empty, shows full tracebacks.
TRACEBACK_ENV = "LBEN_ODE_TRACEBACK"

#: Command-line flag with the same effect (removed before the arguments are parsed).
TRACEBACK_FLAG = "--traceback"

#: The subcommands and what each does, as ``lben-ode --help`` lists them.
SUBCOMMANDS: dict[str, str] = {
    "fit": "train a model (default: a dense LBEN on the embedded 8×8 digits)",
    "validate": "one evaluation epoch over the validation set",
    "test": "one evaluation epoch over the test set (e.g. --ckpt_path … --model.solver fb)",
    "predict": "logits of the model on the data module's predict set",
    "robustness": "clean, certified and attacked accuracy of trained checkpoints: table, CSV, JSON, plot",
}

#: Lightning's configuration error (``lightning.fabric.utilities.exceptions``), matched by name so
#: that this module need not import Lightning.
_LIGHTNING_CONFIGURATION_ERRORS = ("MisconfigurationException",)


#: Warnings of Lightning and torch a user of the command cannot act on, by message (regular expressions).
NOISE_WARNINGS = (
    # torch deprecated the LeafSpec class that Lightning's own pytree helper still checks for.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)

#: The same, for the subcommands that only evaluate: the checkpoint callback restored from
#: ``--ckpt_path`` points at the training run's folder, which an evaluation never writes to.
EVALUATION_NOISE_WARNINGS = (r"The dirpath has changed from",)

#: Lightning's advertisements in its log (messages starting so).
NOISE_LOG_PREFIXES = ("💡 Tip:",)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE_LOG_PREFIXES)


@contextlib.contextmanager
def quiet_lightning(subcommand: str) -> Iterator[None]:
    """Hide, for the duration, the warnings and log lines of :data:`NOISE_WARNINGS` and :data:`NOISE_LOG_PREFIXES`.

    Everything else (convergence warnings, Lightning's advice on a setting) is shown as before.
    """
    noise = NOISE_WARNINGS + (EVALUATION_NOISE_WARNINGS if subcommand in ("validate", "test", "predict") else ())
    handlers = {h for name in ("", "lightning.pytorch", "lightning.fabric") for h in logging.getLogger(name).handlers}
    drop = _DropNoise()
    with warnings.catch_warnings():
        for message in noise:
            warnings.filterwarnings("ignore", message=message)
        for handler in handlers:
            handler.addFilter(drop)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(drop)


def top_level_help() -> str:
    """The text of ``lben-ode --help``: the subcommands, the common options and where to read more."""
    width = max(map(len, SUBCOMMANDS)) + 2
    lines = [
        f"usage: lben-ode [-h] [{TRACEBACK_FLAG}] {{{','.join(SUBCOMMANDS)}}} ...",
        "",
        "Train, evaluate and certify Lipschitz-bounded equilibrium networks.",
        "",
        "subcommands (add --help after one for its options):",
        *(f"  {name:<{width}}{text}" for name, text in SUBCOMMANDS.items()),
        "",
        "options:",
        f"  {'-h, --help':<{width + 10}}show this help message and exit",
        f"  {TRACEBACK_FLAG:<{width + 10}}show the full traceback of an error (also: {TRACEBACK_ENV}=1)",
        f"  {'-c, --config':<{width + 10}}YAML configuration of fit/validate/test/predict (see `lben-ode fit --help`)",
        "",
        "examples:",
        "  lben-ode fit --model.solver fb --trainer.max_epochs 5",
        "  lben-ode fit --model.model.help LBEN          # the options of the model class",
        "  lben-ode test --ckpt_path runs/lightning_logs/version_0/checkpoints/last.ckpt",
        "  lben-ode robustness --ckpt A.ckpt --ckpt B.ckpt",
    ]
    return "\n".join(lines)


def traceback_wanted(argv: Sequence[str]) -> bool:
    """Whether ``--traceback`` is in ``argv`` or ``LBEN_ODE_TRACEBACK`` is set (not ``0``)."""
    return TRACEBACK_FLAG in argv or os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _raised_in(exc: BaseException, package: str) -> bool:
    tb: TracebackType | None = exc.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and f"{os.sep}{package}{os.sep}" in last.tb_frame.f_code.co_filename


def user_error(exc: BaseException) -> str | None:
    """The message to print for an error the user can fix, or None for anything else (a bug).

    The library's errors are found even when jsonargparse wraps them while instantiating classes;
    Lightning's ``MisconfigurationException`` (e.g. a GPU requested on a machine without one),
    command-line usage errors and jsonargparse's validation errors count too.
    """
    chain = _causes(exc)
    for error in chain:
        if isinstance(error, LBENError):
            return f"{type(error).__name__}: {error}"
    for error in chain:
        if any(cls.__name__ in _LIGHTNING_CONFIGURATION_ERRORS for cls in type(error).__mro__):
            return str(error).strip()
    if isinstance(exc, argparse.ArgumentError) or (
        isinstance(exc, (ValueError, TypeError)) and _raised_in(exc, "jsonargparse")
    ):
        return _without_type_dump(str(exc).strip())
    return None


#: Lines of jsonargparse's messages that dump its internal types rather than say what is wrong.
_TYPE_DUMP_PREFIXES = ("Subtypes:", "Given value type:", "- Expected a <class 'NoneType'>")


def _without_type_dump(message: str) -> str:
    """jsonargparse's message without the lines listing Python types (the errors and the given value stay)."""
    lines = [line for line in message.splitlines() if not line.strip().startswith(_TYPE_DUMP_PREFIXES)]
    return "\n".join(line if len(line) <= 200 else line[:199] + "…" for line in lines)


def run_reporting_errors(prog: str, run: Callable[[], T], show_traceback: bool = False) -> T:
    """``run()``, with errors the user can fix printed as ``PROG: error: MESSAGE`` and exit status 2.

    Other exceptions (bugs) propagate with their traceback, and so does every one when
    ``show_traceback`` is true.
    """
    try:
        return run()
    except Exception as exc:
        message = None if show_traceback else user_error(exc)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        if isinstance(exc, argparse.ArgumentError):
            print(f"tip: '{prog} --help' lists the options", file=sys.stderr)
        raise SystemExit(2) from None


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lben-ode`` command; ``args`` replaces ``sys.argv[1:]`` when given.

    ``lben-ode robustness …`` runs :mod:`.robustness_cli` (its own options; ``lben-ode robustness
    --help`` lists them), the other subcommands Lightning's CLI (:class:`.cli.LBENCLI`).
    """
    argv = list(sys.argv[1:] if args is None else args)
    show_traceback = traceback_wanted(argv)
    argv = [a for a in argv if a != TRACEBACK_FLAG]
    if argv in (["-h"], ["--help"]):
        print(top_level_help())
        raise SystemExit(0)
    if not argv:
        print(top_level_help().splitlines()[0], file=sys.stderr)
        print(f"lben-ode: error: expected a subcommand: {', '.join(SUBCOMMANDS)} (see 'lben-ode --help')",
              file=sys.stderr)
        raise SystemExit(2)
    if argv[0] == "robustness":
        from .robustness_cli import run_naming_the_flag as run_robustness

        run_reporting_errors("lben-ode robustness", lambda: run_robustness(argv[1:]), show_traceback)
        return
    prog = f"lben-ode {argv[0]}" if argv[0] in SUBCOMMANDS else "lben-ode"
    if args is None:
        # Lightning reads sys.argv itself (and relaunches it for multi-process strategies); it
        # warns when given arguments too.
        sys.argv[1:] = argv
    cli_args = None if args is None else argv

    def run_lightning() -> None:
        from .cli import LBENCLI

        with quiet_lightning(argv[0]):
            # Parse errors raise instead of printing the whole usage (dozens of lines) and exiting.
            LBENCLI(args=cli_args, parser_kwargs={"exit_on_error": False})

    run_reporting_errors(prog, run_lightning, show_traceback)


if __name__ == "__main__":  # pragma: no cover
    main()
