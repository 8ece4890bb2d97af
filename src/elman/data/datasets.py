"""Real data that ships with elman, and readers for the user's own CSV and text files.

Bundled (package data in ``elman/data/files/``, see ``PROVENANCE.md`` there for source, licence
and how each file was made; nothing here touches the network):

- :func:`load_seattle_weather` -- Seattle daily weather 2012-2015, 1,461 days (NOAA data, as
  shipped by the ``vega_datasets`` package);
- :func:`load_movie_reviews` -- 10,605 movie-review snippets with mean human sentiment scores
  (Hutto & Gilbert, ICWSM 2014);
- :func:`load_hamlet` -- Shakespeare's Hamlet, about 175k characters;
- :func:`load_airline_passengers` -- monthly international airline passengers 1949-1960 (Box &
  Jenkins series G), 144 values.

Readers: :func:`read_csv` (stdlib ``csv``, no pandas) returns a :class:`Table`, and
:func:`read_text` reads a UTF-8 text file. Both fail with a message that names the file, the line
and the column, so a user can fix the file without reading our source.

>>> weather = load_seattle_weather()
>>> weather.values.shape, weather.columns
((1461, 4), ['precipitation', 'temp_max', 'temp_min', 'wind'])
>>> str(weather.dates[0]), weather.text["weather"][:2]
('2012-01-01', ['drizzle', 'rain'])
"""
from __future__ import annotations

import csv
import difflib
import gzip
import io
import os
import re
import stat
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

__all__ = ["Table", "read_csv", "read_text", "load_seattle_weather", "load_movie_reviews",
           "load_hamlet", "load_airline_passengers"]

# Cells that mean "no value" in a numeric or date column, compared after strip() and lower().
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null"})
MISSING_MODES = ("error", "drop", "ffill")

# ISO-like dates only: numpy alone would read "20120131" as the year 20,120,131.
_DATE = re.compile(r"\d{4}(?:[-/]\d{2}(?:[-/]\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?)?)?")


@dataclass
class Table:
    """What :func:`read_csv` returns: numeric columns as one float matrix, plus dates and text.

    - ``columns``: names of the numeric columns, in the order of ``values``' columns;
    - ``values``: (rows, len(columns)) float64;
    - ``dates``: (rows,) ``np.datetime64`` array (unit from the file: days, months, ...) when a
      ``date_column`` was given, else None;
    - ``text``: ``{name: list of str}`` for the ``text_columns``, cells verbatim;
    - ``line_numbers``: (rows,) the line in the file each row came from (1 = the header), which
      tells which rows ``missing="drop"`` removed.
    """
    columns: list
    values: np.ndarray
    dates: np.ndarray | None = None
    text: dict = field(default_factory=dict)
    line_numbers: np.ndarray | None = None

    def __len__(self) -> int:
        return self.values.shape[0]

    def column(self, name: str) -> np.ndarray:
        """One numeric column as a (rows,) array (a view of ``values``)."""
        if name not in self.columns:
            raise KeyError(f"no numeric column named {name!r}; the numeric columns are: "
                           f"{', '.join(self.columns)}")
        return self.values[:, self.columns.index(name)]


# --------------------------------------------------------------------------- readers

def read_csv(path, columns=None, date_column=None, text_columns=(), missing: str = "error",
             delimiter: str = ",", encoding: str = "utf-8") -> Table:
    """Read a CSV file with a header row into a :class:`Table`.

    - ``columns``: the numeric columns to read, in this order; None means every column that is not
      the ``date_column`` or one of the ``text_columns`` (so each of those must then be numeric).
      Numeric cells are parsed with ``float``; anything else is an error naming line and column.
    - ``date_column``: a column of ISO dates (``2012-01-31``, ``2012/01/31``, ``2012-01``,
      ``2012-01-31 14:00``), returned as ``Table.dates`` (``np.datetime64``).
    - ``text_columns``: columns returned verbatim as strings in ``Table.text`` (labels, texts);
      missing-value handling does not apply to them.
    - ``missing``: a numeric or date cell that is empty or one of ``NA``, ``N/A``, ``nan``,
      ``null`` (any case) is missing. ``"error"`` (default) raises, naming the first missing cell
      and the count; ``"drop"`` drops every row with a missing cell; ``"ffill"`` carries the
      column's last value forward (a missing first value, or a missing date, is still an error).

    Blank lines are skipped; a UTF-8 byte-order mark is ignored. Errors are ``ValueError`` (bad
    content) or ``TypeError`` (bad arguments); a missing file is ``FileNotFoundError``.

    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "t.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("day,temp,wind,sky\\n2020-01-01,3.5,2,sun\\n2020-01-02,NA,4,rain\\n")
    >>> read_csv(path, columns=["temp"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...t.csv, line 3, column 'temp': missing value ('NA'); 1 missing cell in all ...
    >>> t = read_csv(path, date_column="day", text_columns=["sky"], missing="ffill")
    >>> t.columns, t.values.tolist(), t.text["sky"]
    (['temp', 'wind'], [[3.5, 2.0], [3.5, 4.0]], ['sun', 'rain'])
    >>> folder.cleanup()
    """
    source = os.fspath(path)
    raw = _read_bytes(source)
    return _parse_csv(raw, source, columns=columns, date_column=date_column,
                      text_columns=text_columns, missing=missing, delimiter=delimiter,
                      encoding=encoding)


def _read_bytes(source: str) -> bytes:
    """A regular file's bytes; a FIFO, socket or device is refused without opening it (reading
    a FIFO nobody writes would block forever), a directory with a clear message."""
    info = os.stat(source)               # FileNotFoundError names the path
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(f"{source}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{source}: not a regular file (a FIFO, socket or device)")
    with open(source, "rb") as f:
        return f.read()


def read_text(path, encoding: str = "utf-8") -> str:
    """A text file as one string: decoded (UTF-8 by default), byte-order mark dropped, line ends
    normalised to ``\\n`` (so a Windows file gives the same characters as a Unix one).

    An empty file, or bytes that are not valid in ``encoding``, raise ``ValueError``; the latter
    names the byte offset and line, and suggests passing ``encoding=...``.
    """
    source = os.fspath(path)
    raw = _read_bytes(source)
    text = _decode(raw, source, encoding).replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise ValueError(f"{source}: the file is empty")
    return text


def _decode(raw: bytes, source: str, encoding: str) -> str:
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r} (try 'utf-8', 'latin-1' or "
                         f"'cp1252')") from None
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        bad = raw[err.start:err.end].hex(" ")
        raise ValueError(f"{source}: not valid {err.encoding} text: byte offset {err.start} "
                         f"(line {line}) holds 0x{bad} ({err.reason}); if the file uses another "
                         f"encoding, pass it, e.g. encoding='latin-1' or encoding='cp1252'"
                         ) from None
    return text[1:] if text.startswith("\ufeff") else text


def _names(arg, what: str) -> list:
    """A list of column names; a bare string is refused (it would silently mean its letters)."""
    if isinstance(arg, str):
        raise TypeError(f"{what} must be a list of column names, got the string {arg!r}; "
                        f"write {what}=[{arg!r}]")
    names = list(arg)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what} must hold column names (str), got {name!r}")
    return names


def _check_known(name: str, header: list, source: str) -> None:
    if name not in header:
        close = difflib.get_close_matches(name, header, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{source}: no column named {name!r}{hint}; the columns are: "
                         f"{', '.join(header)}")


def _parse_csv(raw: bytes, source: str, columns=None, date_column=None, text_columns=(),
               missing: str = "error", delimiter: str = ",", encoding: str = "utf-8") -> Table:
    if missing not in MISSING_MODES:
        raise ValueError(f"missing must be one of {', '.join(map(repr, MISSING_MODES))}, got "
                         f"{missing!r}")
    text_columns = _names(text_columns, "text_columns")
    if date_column is not None and not isinstance(date_column, str):
        raise TypeError(f"date_column must be a column name (str) or None, got {date_column!r}")
    text = _decode(raw, source, encoding)
    if not text.strip():
        raise ValueError(f"{source}: the file is empty; expected a header row naming the columns "
                         f"(e.g. 'date,temp'), then one row per line")

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = ((reader.line_num, row) for row in reader if any(cell.strip() for cell in row))
    _, header = next(rows)              # exists: the text is not blank
    header = [name.strip() for name in header]
    for k, name in enumerate(header):
        if not name:
            raise ValueError(f"{source}: header column {k + 1} has no name; the header row must "
                             f"name every column")
        if name in header[:k]:
            raise ValueError(f"{source}: the header names column {name!r} twice")

    for name in text_columns + ([date_column] if date_column is not None else []):
        _check_known(name, header, source)
    if columns is None:
        columns = [h for h in header if h != date_column and h not in text_columns]
    else:
        columns = _names(columns, "columns")
        for name in columns:
            _check_known(name, header, source)
            if name == date_column or name in text_columns:
                raise ValueError(f"column {name!r} is asked for both as numeric (columns) and "
                                 f"as {'the date' if name == date_column else 'text'} column")
        if len(set(columns)) != len(columns):
            raise ValueError(f"columns names a column twice: {columns}")
    numeric_at = [header.index(c) for c in columns]
    text_at = [header.index(c) for c in text_columns]
    date_at = header.index(date_column) if date_column is not None else None

    lines, values, texts, dates = [], [], [[] for _ in text_columns], []
    is_missing, date_missing, raw_missing = [], [], {}
    for line, row in rows:
        if len(row) != len(header):
            raise ValueError(f"{source}, line {line}: {len(row)} fields, but the header has "
                             f"{len(header)}; a field containing {delimiter!r} must be quoted")
        lines.append(line)
        parsed, flags = [], []
        for c, at in zip(columns, numeric_at):
            cell = row[at].strip()
            if cell.lower() in MISSING_MARKERS:
                parsed.append(np.nan)
                flags.append(True)
                raw_missing.setdefault((line, c), row[at])
                continue
            try:
                parsed.append(float(cell))
            except ValueError:
                hint = (f" (if {c!r} holds text, pass text_columns=[{c!r}], or leave it out of "
                        f"columns=[...])")
                raise ValueError(f"{source}, line {line}, column {c!r}: expected a number, got "
                                 f"{row[at]!r}{hint}") from None
            flags.append(False)
        values.append(parsed)
        is_missing.append(flags)
        for bucket, at in zip(texts, text_at):
            bucket.append(row[at])
        if date_at is not None:
            cell = row[date_at].strip()
            if cell.lower() in MISSING_MARKERS:
                dates.append(None)
                date_missing.append(True)
                raw_missing.setdefault((line, date_column), row[date_at])
            else:
                dates.append(_parse_date(cell, source, line, date_column))
                date_missing.append(False)
    if not lines:
        raise ValueError(f"{source}: the file has a header but no data rows")

    values = np.array(values, dtype=np.float64).reshape(len(lines), len(columns))
    is_missing = np.array(is_missing, dtype=bool).reshape(values.shape)
    date_missing = np.array(date_missing if date_at is not None else [False] * len(lines))
    lines = np.array(lines)
    any_missing = is_missing.any(axis=1) | date_missing

    if any_missing.any() and missing == "error":
        per_column = {c: int(n) for c, n in zip(columns, is_missing.sum(axis=0)) if n}
        if date_missing.any():
            per_column = {date_column: int(date_missing.sum()), **per_column}
        total = sum(per_column.values())
        first = int(np.argmax(any_missing))
        where = date_column if date_missing[first] else columns[int(np.argmax(is_missing[first]))]
        counts = ", ".join(f"{c}: {n}" for c, n in per_column.items())
        raise ValueError(f"{source}, line {lines[first]}, column {where!r}: missing value "
                         f"({raw_missing[(lines[first], where)]!r}); {total} missing "
                         f"cell{'s' if total > 1 else ''} in all ({counts}). Pass missing='drop' "
                         f"to drop such rows, or missing='ffill' to carry the last value forward.")
    if missing == "ffill":
        if date_missing.any():
            line = lines[int(np.argmax(date_missing))]
            raise ValueError(f"{source}, line {line}, column {date_column!r}: missing date; "
                             f"missing='ffill' fills numbers only (use missing='drop')")
        for j, c in enumerate(columns):
            gaps = is_missing[:, j]
            if not gaps.any():
                continue
            if gaps[0]:
                raise ValueError(f"{source}, line {lines[0]}, column {c!r}: missing value with "
                                 f"no earlier value to carry forward (use missing='drop')")
            # index of the last present row at or before each row, then gather
            last = np.maximum.accumulate(np.where(gaps, 0, np.arange(len(gaps))))
            values[:, j] = values[last, j]
        keep = np.ones(len(lines), dtype=bool)
    else:
        keep = ~any_missing
        if not keep.any():
            raise ValueError(f"{source}: every row has a missing value; missing='drop' left "
                             f"nothing")

    out_dates = None
    if date_at is not None:
        out_dates = np.array([d for d, k in zip(dates, keep) if k])
    return Table(columns=list(columns), values=values[keep],
                 dates=out_dates,
                 text={c: [t for t, k in zip(bucket, keep) if k]
                       for c, bucket in zip(text_columns, texts)},
                 line_numbers=lines[keep])


def _parse_date(cell: str, source: str, line: int, column: str) -> np.datetime64:
    if _DATE.fullmatch(cell):
        try:
            return np.datetime64(cell.replace("/", "-"))
        except ValueError:
            pass                         # e.g. month 13: fall through to the message below
    raise ValueError(f"{source}, line {line}, column {column!r}: cannot read {cell!r} as a date; "
                     f"expected the ISO form, e.g. 2012-01-31, 2012/01/31, 2012-01 or "
                     f"2012-01-31 14:00")


# --------------------------------------------------------------------------- bundled data

def _bundled_bytes(name: str) -> bytes:
    """The bytes of a bundled file (``elman/data/files/<name>``), gunzipped if it ends in .gz."""
    data = (resources.files("elman.data") / "files" / name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def load_seattle_weather() -> Table:
    """Seattle daily weather, 2012-01-01 .. 2015-12-31 (1,461 days), NOAA data.

    A :class:`Table` with ``dates`` (datetime64[D]), ``columns`` = ``['precipitation',
    'temp_max', 'temp_min', 'wind']``, ``values`` (1461, 4) float64 and ``text['weather']``, one
    of drizzle, fog, rain, snow, sun per day. The file states no units; the values read as mm of
    precipitation, degrees Celsius and wind speed in m/s.
    """
    return _parse_csv(_bundled_bytes("seattle-weather.csv"), "seattle-weather.csv",
                      date_column="date", text_columns=["weather"])


def _movie_snippets():
    """All 10,605 rows of the snippet file: (ids, scores, texts), zeros included."""
    ids, scores, texts = [], [], []
    lines = _bundled_bytes("movieReviewSnippets_GroundTruth.txt.gz").decode("utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        snippet_id, score, text = line.split("\t", 2)   # ID, mean rating, snippet
        ids.append(int(snippet_id))
        scores.append(float(score))
        texts.append(text)
    return np.array(ids), np.array(scores), texts


def load_movie_reviews():
    """Movie-review snippets with human sentiment, for binary classification.

    Returns ``(texts, labels, scores)``: ``texts`` a list of str (verbatim, including the
    snippets' ``''quote''`` marks), ``labels`` int64 0/1 (1 = positive mean score), ``scores`` the
    mean rating of at least 20 raters on a -4..4 scale. Of the 10,605 snippets, the 37 with a mean
    of exactly 0 are dropped, leaving 10,568, in file order.
    """
    _, scores, texts = _movie_snippets()
    keep = scores != 0
    return ([t for t, k in zip(texts, keep) if k], (scores[keep] > 0).astype(np.int64),
            scores[keep])


def load_hamlet() -> str:
    """The text of Hamlet (public domain), 175,176 characters, ``\\n`` line ends."""
    return _bundled_bytes("hamlet.txt.gz").decode("utf-8")


def load_airline_passengers():
    """Monthly international airline passengers (thousands), 1949-01 .. 1960-12.

    Returns ``(months, values)``: (144,) datetime64[M] and (144,) float64 (112.0 .. 432.0).
    Box, Jenkins & Reinsel, *Time Series Analysis*, series G.
    """
    table = _parse_csv(_bundled_bytes("airline-passengers.csv"), "airline-passengers.csv",
                       columns=["passengers"], date_column="month")
    return table.dates.astype("datetime64[M]"), table.values[:, 0].copy()


def load_cmudict(stress: bool = False) -> dict:
    """The CMU Pronouncing Dictionary 0.7b (about 134k entries, ARPAbet phonemes).

    Returns ``{word: [pronunciation, ...]}`` in file order, each pronunciation a tuple of
    phoneme strings; a word's variants (``word(2)`` in the file) are its later
    pronunciations, and trailing ``# comments`` are dropped. Without ``stress`` the lexical
    stress digits are removed (``AH0`` -> ``AH``: the 39 phonemes of the usual
    grapheme-to-phoneme benchmark); a variant that then repeats an earlier one is dropped.
    Words are lower case, as in the file (letters, apostrophes, and a few with ``.``/``-``
    or digits).
    """
    lexicon: dict = {}
    text = _bundled_bytes("cmudict.dict.gz").decode("utf-8")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        head, *phones = line.split()
        word = head.split("(", 1)[0]
        if not stress:
            phones = [p.rstrip("012") for p in phones]
        variants = lexicon.setdefault(word, [])
        if tuple(phones) not in variants:
            variants.append(tuple(phones))
    return lexicon
