"""User-facing errors: anything the user can fix by changing input, reported once, all at once."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SignrayError", "ConfigError", "DataError", "EXIT_USAGE"]

EXIT_USAGE = 2


class SignrayError(Exception):
    """Base for errors caused by user input; entry points print them and exit with code 2."""

    def __init__(self, problems: Iterable[str] | str, *, title: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.title = title or self.default_title
        super().__init__(self.format())

    default_title = "invalid input"

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


def _rebuild(cls: type[SignrayError], problems: list[str], title: str) -> SignrayError:
    return cls(problems, title=title)
