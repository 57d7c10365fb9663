"""User-facing errors: anything the user can fix by changing input, reported once, all at once."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "EXIT_USAGE",
    "ConfigError",
    "DataError",
    "NonFiniteLossError",
    "Problem",
    "SignrayError",
    "fields_of",
]

EXIT_USAGE = 2


class Problem(str):
    """One broken rule: the sentence a user reads, plus the config fields it concerns as data.

    A `str`, so it prints and compares as its message; code that needs to know *which* fields a
    rule is about (search-space checks, architecture validation) reads `fields` instead of
    searching the English text.
    """

    fields: tuple[str, ...]

    def __new__(cls, text: str, fields: Iterable[str] = ()) -> Problem:
        self = super().__new__(cls, text)
        self.fields = tuple(fields)
        return self

    def __reduce__(self):
        return (Problem, (str(self), self.fields))

    def prefixed(self, prefix: str) -> Problem:
        """The same problem with `prefix` before its text (e.g. the file or split it is in)."""
        return Problem(prefix + self, self.fields)


def fields_of(problem: str) -> tuple[str, ...]:
    """The fields a problem concerns; () for a plain string."""
    return getattr(problem, "fields", ())


class SignrayError(Exception):
    """Base for errors caused by user input; entry points print them and exit with code 2."""

    default_title = "invalid input"

    def __init__(self, problems: Iterable[str] | str, *, title: str | None = None) -> None:
        problems = [problems] if isinstance(problems, str) else list(problems)
        self.problems = [p if isinstance(p, Problem) else Problem(p) for p in problems]
        self.title = title or self.default_title
        super().__init__(self.format())

    def __reduce__(self):
        # Rebuilt from its parts: a copy made from the formatted message (what Exception's
        # pickling does) would prefix the title again on every trip through Ray.
        return _rebuild, (type(self), self.problems, self.title)

    def format(self) -> str:
        if len(self.problems) == 1:
            return f"{self.title}: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"{self.title}: found {len(self.problems)} problems:\n{lines}"


class ConfigError(SignrayError, ValueError):
    """A config, search-space or CLI value breaks a rule."""

    default_title = "invalid configuration"


class DataError(SignrayError, ValueError):
    """A data file or label CSV breaks a rule."""

    default_title = "invalid data"


class NonFiniteLossError(RuntimeError):
    """Training diverged (NaN/Inf loss); continuing would only report garbage.

    Not an input error, but it gets the same clear one-line message (exit code 1).
    """


def _rebuild(cls: type[SignrayError], problems: list[Problem], title: str) -> SignrayError:
    return cls(problems, title=title)
