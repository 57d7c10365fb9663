"""What every command shares: flags built from typed dataclasses, the output-folder flag, and the
one path from a user error to ``error: ...`` on stderr and exit code 2.

Flags are generated from dataclass fields (`signray.fields.flag` names them), so the same thing
has the same flag in every command and a new field is a new flag with no extra code.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from signray.errors import EXIT_USAGE, NonFiniteLossError, SignrayError
from signray.fields import coerce, field_types, flag, help_of

__all__ = [
    "add_cluster_flags",
    "add_dataclass_flags",
    "add_output_dir_flag",
    "command",
    "command_parser",
    "given_values",
    "run_command",
    "user_errors_exit",
]


def _arg_type(name: str, ftype) -> Callable[[str], Any]:
    """argparse type: the shared coercion, so `--epochs 2.5` reads like the same YAML mistake."""

    def convert(text: str) -> Any:
        value, problem = coerce(name, text, ftype)
        if problem:
            raise argparse.ArgumentTypeError(str(problem))
        return value

    convert.__name__ = ftype.base.__name__  # argparse names the type in its messages
    return convert


def add_dataclass_flags(
    group: argparse._ActionsContainer,
    cls: type,
    *,
    choices: Mapping[str, Iterable[str]] | None = None,
    exclude: Iterable[str] = (),
    seen: set[str] | None = None,
) -> None:
    """One flag per field of dataclass `cls`; flags not given stay unset (argparse.SUPPRESS).

    Unset flags let the caller layer defaults -> config file -> flags. Bools get ``--x/--no-x``;
    the help text is the field's own (`signray.fields.option`).
    `seen` skips fields another dataclass already added (two models share ``depth``).
    """
    choices, skip = choices or {}, set(exclude)
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or (seen is not None and f.name in seen) or f.name not in types:
            continue
        if seen is not None:
            seen.add(f.name)
        ftype = types[f.name]
        if ftype.base is object:
            continue
        text = help_of(f)
        if ftype.base is bool:
            group.add_argument(
                flag(f.name),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        group.add_argument(
            flag(f.name),
            dest=f.name,
            type=_arg_type(f.name, ftype),
            choices=list(choices[f.name]) if f.name in choices else None,
            default=argparse.SUPPRESS,
            metavar=None if f.name in choices else f.name.upper(),
            help=f"{text} (default: {default})",
        )


def given_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` the user gave as flags."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def add_output_dir_flag(
    parser: argparse._ActionsContainer, help: str, *, required: bool = False, default=None
) -> None:
    """``--output-dir`` (``--out`` still accepted) in every command that writes a folder."""
    parser.add_argument(
        "--output-dir", "--out", dest="output_dir", required=required, default=default, help=help
    )


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """``--address``, ``--dashboard/--no-dashboard``, ``--dashboard-host``, ``--dashboard-port``
    (train and tune)."""
    c = parser.add_argument_group("cluster")
    c.add_argument(
        "--address",
        default=None,
        help="join a running Ray cluster (auto|HOST:PORT); default: start one here",
    )
    c.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                   help="start the Ray dashboard with the cluster started here (default: on; "
                   "--no-dashboard saves its dozen processes' start-up)")  # fmt: skip
    c.add_argument("--dashboard-host", default="127.0.0.1",
                   help="interface the dashboard binds to (default 127.0.0.1; anything else "
                   "exposes code execution to that network)")  # fmt: skip
    c.add_argument("--dashboard-port", type=int, default=None, help="default: Ray's (8265)")


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
    """Turn input errors into one clear message on stderr and exit code 2, no traceback.

    A diverged run (NaN/Inf loss) is not an input error but gets the same clear message, exit 1.
    """
    try:
        yield
    except SignrayError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except NonFiniteLossError as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def run_command(body: Callable[[], int | None]) -> int:
    """Run a command body under `user_errors_exit`; it returns the exit code (None: 0)."""
    with user_errors_exit():
        return body() or 0


def command_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m MODULE`` (also a ``signray-*`` console script), described by the
    first paragraph of the module's docstring."""
    description = (doc or "").strip().split("\n\n")[0]
    return argparse.ArgumentParser(prog=f"python -m {module}", description=description)


def command(
    build_parser: Callable[[], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int | None],
    module_name: str,
) -> Callable[[Sequence[str] | None], int]:
    """A command's ``main(argv) -> exit code``: parse flags, run, turn user errors into exit 2.

    Pass the module's ``__name__``: under ``python -m`` (``"__main__"``) the command runs now and
    exits with its code (`_exit_without_teardown`); on import it only returns ``main`` (the
    console scripts call it).
    """

    def main(argv: Sequence[str] | None = None) -> int:
        args = build_parser().parse_args(argv)
        return run_command(lambda: run(args))

    if module_name == "__main__":
        code = main()
        if _started_by_python_m():
            _exit_without_teardown(code)
        sys.exit(code)
    return main


def _started_by_python_m() -> bool:
    """This process is ``python -m <the __main__ module>`` itself (not a runner that executes
    the module with runpy inside its own process)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and sys.orig_argv[1:3] == ["-m", spec.name]


def _exit_without_teardown(code: int) -> None:
    """End a finished command the way the interpreter would, minus its teardown of the modules:
    every exit handler runs (Ray's shutdown, logging's flush, temporary folders, multiprocessing
    children), the output is flushed, then the process ends. Unloading torch and Ray takes
    1-2.5 s on 2 cores and saves nothing, every file being closed by then. With a non-daemon
    thread still running, the interpreter's own exit (which waits for it) is kept."""
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
