"""Pieces every reader shares: option checking, file discovery, decoding with exact error
positions, duplicate-aware item tables, and text clean-up.

Readers report bad input as :class:`~genrec.errors.DataError` naming the file, the line (and
byte offset for decoding errors) and what to do; unknown or ill-typed reader options are
:class:`~genrec.errors.ConfigError` listing the valid ones.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import html
import itertools
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from genrec.data.dataset import Item
from genrec.errors import ConfigError, DataError

_NONE_WORDS = {"none", "null", "~"}
_TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE_WORDS = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Opt:
    """One reader option: its type, default and a one-line help (shown in errors and docs)."""

    type: type
    default: Any
    help: str
    nullable: bool = False


def check_options(fmt: str, options: dict[str, Any], spec: dict[str, Opt]) -> dict[str, Any]:
    """Validate ``options`` against ``spec`` and return every option, defaults filled in.

    Values may be Python objects (API use) or strings (``--opt key=value``); strings are
    converted to the option's type. ``none`` / ``null`` clears a nullable option.
    """
    unknown = sorted(set(options) - set(spec))
    if unknown:
        valid = ", ".join(f"{k} ({o.help})" for k, o in spec.items())
        raise ConfigError(f"unknown option(s) {', '.join(map(repr, unknown))} for format {fmt!r}; "
                          f"valid options: {valid}")
    out = {k: o.default for k, o in spec.items()}
    for key, value in options.items():
        out[key] = _coerce(fmt, key, value, spec[key])
    return out


def _coerce(fmt: str, key: str, value: Any, opt: Opt) -> Any:
    bad = ConfigError(f"option {key}={value!r} for format {fmt!r} must be of type {opt.type.__name__} "
                      f"({opt.help})")
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if opt.nullable:
            return None
        raise bad
    if opt.type is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in _TRUE_WORDS | _FALSE_WORDS:
            return word in _TRUE_WORDS
        raise bad
    if opt.type in (int, float):
        if isinstance(value, bool):
            raise bad
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad from None
        if opt.type is int:
            if not number.is_integer():
                raise bad
            return int(number)
        return number
    if isinstance(value, (dict, list, tuple)):
        raise bad
    return str(value)


def encoding_hint(default: str = "utf-8") -> str:
    return (f"convert the file to {default}, or pass its encoding with --opt encoding=NAME "
            "(e.g. latin-1, cp1252)")


def _open_binary(path: Path):
    """Open ``path`` for binary reading, transparently gunzipping (by magic bytes, not name)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
        return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror or e})") from None


def _check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r} in --opt encoding=...; "
                          "use a Python codec name such as utf-8, latin-1 or cp1252") from None


def _decode_error(path: Path, lineno: int, offset: int, byte: int, encoding: str) -> DataError:
    where = "byte offset (decompressed)" if path.suffix == ".gz" else "byte offset"
    return DataError(f"{path} line {lineno}, {where} {offset}: byte 0x{byte:02x} "
                     f"is not valid {encoding}; {encoding_hint(encoding)}")


def text_lines(path: Path, encoding: str = "utf-8", desc: str | None = None,
               keep_newline: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` (1-based, newline stripped unless ``keep_newline``) from a
    plain or gzipped file.

    Lines are decoded one at a time so that a bad byte is reported with its line and its
    byte offset from the start of the (decompressed) file.
    """
    _check_encoding(encoding)
    offset = 0
    strip_bom = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    f = _open_binary(path)
    try:
        with f, tqdm(desc=desc or path.name, unit=" lines", disable=None, leave=False) as bar:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode(encoding)
                except UnicodeDecodeError as e:
                    raise _decode_error(path, lineno, offset + e.start, raw[e.start], encoding) from None
                if lineno == 1 and strip_bom:
                    line = line.lstrip("\ufeff")
                offset += len(raw)
                if not lineno % 8192:  # per-line updates would cost as much as the decoding
                    bar.update(8192)
                yield lineno, line if keep_newline else line.rstrip("\r\n")
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: the compressed file is truncated or corrupt ({e}); "
                        "download it again") from None


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """Whole file as text; a bad byte is reported with its line and byte offset."""
    _check_encoding(encoding)
    f = _open_binary(path)
    try:
        with f:
            data = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: the compressed file is truncated or corrupt ({e}); "
                        "download it again") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise _decode_error(path, lineno, e.start, data[e.start], encoding) from None
    return text.lstrip("\ufeff")


_WS = re.compile(r"[ \t\n\r]*")


def json_object_entries(text: str, path: Path) -> Iterator[tuple[str, Any, int]]:
    """Yield ``(key, value, line)`` for each member of the top-level JSON object in ``text``.

    Unlike ``json.loads`` this keeps duplicate keys (so callers can reject conflicting ones)
    and knows the line each member starts on.
    """
    dec = json.JSONDecoder()
    line, last = 1, 0

    def fail(pos: int, what: str) -> DataError:
        ln = text.count("\n", 0, pos) + 1
        return DataError(f"{path} line {ln}: not valid JSON ({what}); the file must hold one JSON object "
                         "{\"key\": value, ...}")

    def at(pos: int) -> str:
        return text[pos] if pos < len(text) else ""

    i = _WS.match(text, 0).end()
    if at(i) != "{":
        raise fail(i, "expected '{'")
    i = _WS.match(text, i + 1).end()
    if at(i) == "}":
        i += 1
    else:
        while True:
            if at(i) != '"':
                raise fail(i, "expected a quoted key" if at(i) else "unexpected end of file")
            try:
                key, i = dec.raw_decode(text, i)
                i = _WS.match(text, i).end()
                if at(i) != ":":
                    raise fail(i, "expected ':' after a key")
                i = _WS.match(text, i + 1).end()
                line += text.count("\n", last, i)
                last = i
                value, i = dec.raw_decode(text, i)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") \
                    from None
            yield key, value, line
            i = _WS.match(text, i).end()
            if at(i) == ",":
                i = _WS.match(text, i + 1).end()
            elif at(i) == "}":
                i += 1
                break
            else:
                raise fail(i, "expected ',' or '}'" if at(i) else "unexpected end of file")
    if _WS.match(text, i).end() != len(text):
        raise fail(i, "extra data after the closing '}'")


def csv_records(path: Path, sep: str, encoding: str = "utf-8",
                header: bool = True) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, {column: value})`` for each data row of a delimited file.

    Columns are named by the first row, or ``"0"``, ``"1"``, ... when ``header`` is false. A row
    whose field count differs from the first row's is reported with its line number.
    """
    # Newlines are kept so that a quoted field spanning lines keeps its line break.
    lines = (line for _, line in text_lines(path, encoding, keep_newline=True))
    reader = csv.reader(lines, delimiter=sep, strict=True)
    try:
        first = next(reader, None)
        if first is None:
            raise DataError(f"{path} is empty; expected "
                            f"{'a header row followed by ' if header else ''}data rows")
        names = first if header else [str(i) for i in range(len(first))]
        rows = itertools.chain([] if header else [first], reader)
        for row in rows:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(names):
                first_row = "header" if header else "first line"
                raise DataError(f"{path} line {reader.line_num}: {len(row)} field(s) but the {first_row} "
                                f"has {len(names)} ({sep!r}-separated); "
                                "fix the line or pass the right --opt sep=")
            yield reader.line_num, dict(zip(names, row))
    except csv.Error as e:
        raise DataError(f"{path} line {reader.line_num}: malformed CSV ({e}); fix the quoting on that line") \
            from None


def columns_of(path: Path, sep: str, encoding: str = "utf-8", header: bool = True) -> list[str]:
    """Column names of a delimited file (its first row, or ``"0"``, ``"1"``, ... without a header)."""
    for _, line in text_lines(path, encoding):
        first = next(csv.reader([line], delimiter=sep))
        return first if header else [str(i) for i in range(len(first))]
    raise DataError(f"{path} is empty; expected {'a header row followed by ' if header else ''}data rows")


class ItemTable:
    """Items keyed by id; an id seen twice must carry identical text, else a :class:`DataError`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: dict[str, Item] = {}
        self.where: dict[str, str] = {}
        self.identical_duplicates = 0

    def add(self, item: Item, where: int | str) -> None:
        """Add ``item`` read at ``where`` (a line number, or a label such as ``"row 3"``)."""
        where = f"line {where}" if isinstance(where, int) else where
        old = self.items.get(item.item_id)
        if old is None:
            self.items[item.item_id] = item
            self.where[item.item_id] = where
        elif old == item:
            self.identical_duplicates += 1
        else:
            raise DataError(f"{self.path}: item id {item.item_id!r} appears twice with different text "
                            f"({self.where[item.item_id]} and {where}); keep one of the two "
                            "(identical duplicates are accepted)")


def find_one(directory: Path, patterns: Iterable[str], what: str, required: bool = True) -> Path | None:
    """The single file in ``directory`` matching any glob in ``patterns``; clear errors otherwise."""
    patterns = list(patterns)
    found = sorted({p for pat in patterns for p in directory.glob(pat) if p.is_file()})
    if len(found) == 1:
        return found[0]
    if not found:
        if not required:
            return None
        raise DataError(f"{directory}: no {what} found (expected a file matching {' or '.join(patterns)}); "
                        "check --path")
    raise DataError(f"{directory}: several {what} files ({', '.join(p.name for p in found)}); "
                    "pass the one you want as --path (or --opt name=NAME where supported)")


_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")


def clean_text(value: Any) -> str:
    """Plain one-line text: HTML tags removed, entities unescaped, whitespace collapsed; lists joined."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(clean_text(v) for v in value)
    text = html.unescape(_TAG.sub(" ", str(value)))
    return _SPACES.sub(" ", text).strip()


def as_text(value: Any) -> str:
    """Source text kept as is, apart from surrounding whitespace; lists are joined by spaces."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(t for t in (as_text(v) for v in value) if t)
    return str(value).strip()


def unique_list(values: Iterable[Any], clean: bool = False) -> list[str]:
    """Flatten nested lists into unique non-empty strings, first occurrence order."""
    out: list[str] = []
    seen: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif v is not None:
            s = clean_text(v) if clean else str(v).strip()
            if s and s not in seen:
                seen.add(s)
                out.append(s)

    walk(list(values))
    return out


def split_list(value: Any, sep: str, clean: bool = False) -> list[str]:
    """A category field as a list: lists are flattened, strings split on ``sep``."""
    if isinstance(value, (list, tuple)):
        return unique_list(value, clean)
    if value is None:
        return []
    return unique_list(str(value).split(sep) if sep else [value], clean)


def id_str(value: Any) -> str:
    """An id as a string; ``3.0`` from a float column becomes ``"3"``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
