"""Label CSVs (``file,gloss,cat``): parsed and validated, every problem named by file and line."""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass

from signray.errors import DataError
from signray.storage import Location, RemotePath, as_location, explain_error

__all__ = [
    "REQUIRED_COLUMNS",
    "LabelRow",
    "clip_name",
    "parse_labels",
    "range_text",
    "read_labels",
]

REQUIRED_COLUMNS = ("file", "gloss", "cat")
_INT_RE = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class LabelRow:
    """One labels-CSV row; ``line`` is the line number a user sees in an editor (header = 1)."""

    line: int
    name: str
    gloss: int
    cat: int


def clip_name(text: str) -> str:
    """A CSV's ``file`` cell as a clip name: ``.npz`` dropped and Windows separators made ``/``
    (the reference project's CSVs, written on Windows, name clips ``0\\0.npz``)."""
    name = text.replace("\\", "/")
    return name[: -len(".npz")] if name.lower().endswith(".npz") else name


def _parse_id(text: str) -> int | None:
    return int(text) if _INT_RE.fullmatch(text) else None


def range_text(field: str, limit: int | None) -> str:
    return f"0 <= {field} < {limit}" if limit is not None else f"{field} >= 0"


def parse_labels(
    path: Location, num_gloss: int | None, num_cat: int | None
) -> tuple[list[LabelRow], list[str], list[str]]:
    """Returns ``(rows, problems, warnings)`` for a labels CSV; never raises for bad input."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return [], [f"labels CSV {path}: file not found"], []
    except OSError as exc:
        return [], [f"labels CSV {path}: cannot read it ({explain_error(exc, path)})"], []
    except UnicodeDecodeError as exc:
        return [], [f"labels CSV {path}: cannot read it ({exc})"], []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        records = [(reader.line_num, cells) for cells in reader]
    except csv.Error as exc:
        return [], [f"labels CSV {path}: cannot parse it as CSV ({exc})"], []

    expected = ",".join(REQUIRED_COLUMNS)
    if not records or not any(cell.strip() for cell in records[0][1]):
        return [], [f"labels CSV {path}: is empty (expected a header line {expected!r})"], []
    header = [cell.strip().lower() for cell in records[0][1]]
    problems: list[str] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        found = ", ".join(repr(c) for c in header)
        problems.append(
            f"labels CSV {path}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(expected columns {expected}; found {found})"
        )
    duplicated = sorted(c for c, n in Counter(header).items() if n > 1 and c in REQUIRED_COLUMNS)
    if duplicated:
        problems.append(f"labels CSV {path}: column(s) {', '.join(duplicated)} appear twice")
    if problems:
        return [], problems, []

    col = {c: header.index(c) for c in REQUIRED_COLUMNS}
    limits = {"gloss": num_gloss, "cat": num_cat}
    rows: list[LabelRow] = []
    first_line: dict[str, int] = {}
    cats_of_gloss: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for line, cells in records[1:]:
        if not any(cell.strip() for cell in cells):
            continue
        where = f"labels CSV {path} line {line}"
        cells = [cell.strip() for cell in cells]
        get = {c: cells[i] if i < len(cells) else "" for c, i in col.items()}
        row_problems = []
        name = clip_name(get["file"])
        if not name:
            row_problems.append(f"{where}: file is empty (expected an .npz basename)")
        elif name.startswith("/") or ".." in name.split("/"):
            row_problems.append(
                f"{where}: file {get['file']!r} leaves the data folder (expected a path "
                "relative to it, without '..')"
            )
        ids: dict[str, int] = {}
        for field in ("gloss", "cat"):
            value = _parse_id(get[field])
            if value is None:
                row_problems.append(
                    f"{where}: {field} {get[field]!r} is not an integer "
                    f"(expected an integer id, {range_text(field, limits[field])})"
                )
            elif value < 0 or (limits[field] is not None and value >= limits[field]):
                row_problems.append(
                    f"{where}: {field} {value} is out of range "
                    f"(expected {range_text(field, limits[field])})"
                )
            else:
                ids[field] = value
        if name:
            if name in first_line:
                row_problems.append(
                    f"{where}: duplicate file {name!r} (first listed on line {first_line[name]})"
                )
            else:
                first_line[name] = line
        problems.extend(row_problems)
        if not row_problems:
            rows.append(LabelRow(line, name, ids["gloss"], ids["cat"]))
            cats_of_gloss[ids["gloss"]][ids["cat"]].append(line)

    notes = []
    for gloss, by_cat in sorted(cats_of_gloss.items()):
        if len(by_cat) > 1:
            parts = "; ".join(
                f"cat {c} on line(s) {', '.join(map(str, lines_[:10]))}"
                + (f" and {len(lines_) - 10} more" if len(lines_) > 10 else "")
                for c, lines_ in sorted(by_cat.items())
            )
            notes.append(
                f"labels CSV {path}: gloss {gloss} has more than one category ({parts}); "
                "expected one category per gloss"
            )
    if not rows and not problems:
        problems.append(f"labels CSV {path}: has no data rows (expected at least one clip)")
    return rows, problems, notes


def read_labels(
    path: str | os.PathLike[str] | RemotePath, *, num_gloss: int | None, num_cat: int | None
) -> list[LabelRow]:
    """Parse and validate a ``file,gloss,cat`` CSV; raises one ``DataError`` with every problem."""
    rows, problems, notes = parse_labels(as_location(path), num_gloss, num_cat)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    if problems:
        raise DataError(problems)
    return rows
