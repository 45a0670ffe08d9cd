"""Generate the hostile-input corpus: files a tenant can drop that try to break callstream.

Contract:

* :func:`generate` writes ``count`` files under ``root`` (a connector's local folder), chosen and
  filled deterministically from ``seed``: the same seed and count give the same names and bytes.
  Every file belongs to a *family* (BOM and UTF-16/32, invalid UTF-8, NUL and controls, line
  endings, unbalanced quotes, 10 MB lines, 100,000 columns, deep or huge JSON, hostile names,
  plus valid files) and is described by a :class:`Member`: how many data rows it holds when
  that is knowable, which final outcomes are acceptable, whether every row must be accepted,
  and whether its name may be skipped by the connector.
* Big families (10 MB lines, 1 M turns, 100,000 columns, 100,000-deep JSON) have a few members;
  the small families share the rest of the count. Big files are streamed to disk in chunks, so
  the generator's memory stays bounded whatever the file size.
* The generator cannot write outside ``root``: every path is built from single names checked
  here (no ``/``, NUL, ``.`` or ``..``), each folder is opened with ``openat`` relative to its
  parent's descriptor with ``O_NOFOLLOW``, and files are created with ``O_EXCL`` (never through
  a link, never over an existing file). That also lets it create paths longer than ``PATH_MAX``.
* ``python tests/hostile/corpus.py ROOT --count N --seed S`` writes the corpus and a manifest
  (one JSON object per file) beside ``ROOT``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from support import CSV_HEADER, conversation_row

PROCESSED, PARTIAL, INVALID = "processed", "partial", "invalid"
#: Name classes: the connector must announce ``safe`` names; ``excluded`` names match the
#: default exclude globs (``.*``); ``may_skip`` names may be announced or skipped as unsafe.
SAFE, EXCLUDED, MAY_SKIP = "safe", "excluded", "may_skip"
MB = 1024 * 1024
ROW_BASE = 1000  # ids of file k are CALL-<k*1000 + row>: unique across the corpus


@dataclass(frozen=True, slots=True)
class Member:
    """One generated file and what a correct service does with it."""

    path: str
    """POSIX path relative to the root; undecodable name bytes as surrogate escapes."""
    family: str
    variant: str
    rows: int | None
    """Data rows (CSV/TSV physical rows, 1 per JSON document), or None when not knowable."""
    accept: tuple[str, ...]
    """Acceptable final outcomes (processed, partial, invalid)."""
    all_valid: bool
    """Unless the file is rejected as a whole, every row must be accepted."""
    min_rejected: int
    """At least this many rows are bad and must be rejected (unless the file is rejected)."""
    name: str
    """safe, excluded or may_skip (see the module constants)."""
    size: int


@dataclass(frozen=True, slots=True)
class _File:
    parts: tuple[bytes, ...]
    chunks: Iterable[bytes]
    rows: int | None
    accept: tuple[str, ...]
    all_valid: bool = False
    min_rejected: int = 0
    name: str = SAFE


class _Ctx:
    """What a family builder gets: its own random stream, a unique id base and its variant."""

    def __init__(self, seed: int, index: int, family: str, variant: str) -> None:
        self.rng = random.Random(f"{seed}:{index}")
        self.index = index
        self.family = family
        self.variant = variant

    def name(self, ext: str) -> tuple[bytes, ...]:
        """The default path: ``<family>/<index>-<variant><ext>``."""
        return (self.family.encode(), f"{self.index:05d}-{self.variant}{ext}".encode())

    def row(self, j: int) -> str:
        """Valid CSV row ``j`` of this file (unique id across the corpus)."""
        return conversation_row(self.index * ROW_BASE + j)

    def rows(self, n: int) -> list[str]:
        """``n`` valid CSV rows."""
        return [self.row(j) for j in range(n)]


def _valid_csv(ctx: _Ctx, n: int, delimiter: str = ",", eol: str = "\n") -> str:
    text = CSV_HEADER + "".join(ctx.rows(n))
    if delimiter != ",":
        text = text.replace(",", delimiter)
    return text.replace("\n", eol) if eol != "\n" else text


def _chat(ctx: _Ctx, n_turns: int = 4, **extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "external_interaction_id": f"CHAT-{ctx.index:05d}",
        "channel": "chat",
        "agent_id": f"a-{ctx.index % 17}",
        "team": "Support",
        "turns": [
            {
                "speaker": "customer" if t % 2 == 0 else "agent",
                "time": f"2026-11-20T12:{t // 60 % 60:02d}:{t % 60:02d}Z",
                "text": "Hello, thank you for contacting us." if t % 2 else "My router drops.",
            }
            for t in range(n_turns)
        ],
    }
    doc.update(extra)
    return doc


def _json(doc: object) -> bytes:
    return json.dumps(doc, indent=1).encode()


# -- families ------------------------------------------------------------------------------------
# Each builder gets a context and returns one file. Variants cycle within a family, so a family
# with at least as many members as variants covers every variant.

Builder = Callable[[_Ctx], _File]


@dataclass(frozen=True, slots=True)
class Family:
    """A kind of hostile (or valid) file."""

    name: str
    variants: tuple[str, ...]
    build: Builder
    weight: int = 1
    """Share of the small-family count."""
    big: tuple[int, int] | None = None
    """Fixed member count (below 10,000 files, from 10,000 files) for big families."""


def valid_csv(ctx: _Ctx) -> _File:
    """Valid CSV exports (LF or CRLF), 1-40 rows: every row must become a conversation."""
    n = ctx.rng.randint(1, 40)
    eol = "\r\n" if ctx.variant == "crlf" else "\n"
    return _File(ctx.name(".csv"), [_valid_csv(ctx, n, eol=eol).encode()], n, (PROCESSED,), True)


def valid_tsv(ctx: _Ctx) -> _File:
    """Valid TSV exports."""
    n = ctx.rng.randint(1, 40)
    return _File(ctx.name(".tsv"), [_valid_csv(ctx, n, "\t").encode()], n, (PROCESSED,), True)


def valid_chat(ctx: _Ctx) -> _File:
    """Valid chat transcripts: an object with turns, or a bare list of turns."""
    doc = _chat(ctx, ctx.rng.randint(1, 30))
    body = doc["turns"] if ctx.variant == "list" else doc
    return _File(ctx.name(".json"), [_json(body)], 1, (PROCESSED,), True)


def quoted_multiline(ctx: _Ctx) -> _File:
    """Valid CSV whose quoted fields hold newlines, commas and doubled quotes."""
    n = ctx.rng.randint(2, 30)
    rows = [
        r.replace(",resolved\n", ',"resolved,\nsee ""notes""\r\nline 3"\n') for r in ctx.rows(n)
    ]
    return _File(ctx.name(".csv"), [(CSV_HEADER + "".join(rows)).encode()], n, (PROCESSED,), True)


def blank_lines(ctx: _Ctx) -> _File:
    """Valid rows separated by blank lines (blank lines are not rows)."""
    n = ctx.rng.randint(1, 20)
    text = CSV_HEADER + "\n".join(ctx.rows(n)) + "\n\n\n"
    return _File(ctx.name(".csv"), [text.encode()], n, (PROCESSED,), True)


def bom_utf8(ctx: _Ctx) -> _File:
    """UTF-8 with a byte-order mark: a CSV or a chat transcript, all valid."""
    if ctx.variant == "chat":
        return _File(
            ctx.name(".json"), [b"\xef\xbb\xbf" + _json(_chat(ctx))], 1, (PROCESSED,), True
        )
    n = ctx.rng.randint(1, 30)
    body = b"\xef\xbb\xbf" + _valid_csv(ctx, n).encode()
    return _File(ctx.name(".csv"), [body], n, (PROCESSED,), True)


_WIDE = {
    "utf16le_bom": ("utf-16-le", b"\xff\xfe"),
    "utf16be_bom": ("utf-16-be", b"\xfe\xff"),
    "utf16le": ("utf-16-le", b""),
    "utf16be": ("utf-16-be", b""),
    "utf32le_bom": ("utf-32-le", b"\xff\xfe\x00\x00"),
    "utf32be_bom": ("utf-32-be", b"\x00\x00\xfe\xff"),
    "utf32le": ("utf-32-le", b""),
    "utf32be": ("utf-32-be", b""),
}


def wide_encoding(ctx: _Ctx) -> _File:
    """Valid rows in UTF-16/32, with and without BOM: decoded whole, or rejected as a file."""
    codec, bom = _WIDE[ctx.variant]
    n = ctx.rng.randint(1, 30)
    body = bom + _valid_csv(ctx, n).encode(codec)
    return _File(ctx.name(".csv"), [body], n, (PROCESSED, INVALID), True)


_BAD_UTF8 = (b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80")


def invalid_utf8(ctx: _Ctx) -> _File:
    """Invalid UTF-8 bytes in one row's field, in the header, or in a chat transcript."""
    bad = ctx.rng.choice(_BAD_UTF8)
    if ctx.variant == "header":
        n = ctx.rng.randint(1, 20)
        header = CSV_HEADER.encode().replace(b"team", b"te" + bad + b"am")
        body = header + "".join(ctx.rows(n)).encode()
        return _File(ctx.name(".csv"), [body], n, (INVALID, PROCESSED), True)
    if ctx.variant == "chat":
        return _File(ctx.name(".json"), [_json(_chat(ctx)).replace(b"router", bad)], 1, (INVALID,))
    n = ctx.rng.randint(2, 40)
    k = ctx.rng.randrange(n)
    rows = [r.encode() for r in ctx.rows(n)]
    rows[k] = rows[k].replace(b"Billing", b"Bil" + bad + b"ling")
    return _File(ctx.name(".csv"), [CSV_HEADER.encode(), *rows], n, (PARTIAL,), min_rejected=1)


def truncated_utf8(ctx: _Ctx) -> _File:
    """A multi-byte character cut in two: at the very end of the file, or before a newline."""
    n = ctx.rng.randint(2, 30)
    rows = [r.encode() for r in ctx.rows(n)]
    if ctx.variant == "eof":  # the upload stopped in the middle of 'é'
        last = rows[-1].replace(b"Billing", "Billé".encode())
        rows[-1] = last[: last.index(b"\xc3") + 1]
    else:
        k = ctx.rng.randrange(n - 1)
        rows[k] = rows[k].replace(b",resolved\n", b",resolv\xc3\n")
    return _File(ctx.name(".csv"), [CSV_HEADER.encode(), *rows], n, (PARTIAL,), min_rejected=1)


_CONTROLS = ("\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1c", "\x1e", "\x1f")


def control_chars(ctx: _Ctx) -> _File:
    """NUL and other C0 controls (not tab, CR, LF) in an id, in a field, in chat text."""
    ch = "\x00" if ctx.variant.startswith("nul") else ctx.rng.choice(_CONTROLS[1:])
    if ctx.variant.endswith("chat"):
        doc = _chat(ctx)
        doc["turns"][1]["text"] = f"Hello{ch}there"  # type: ignore[index]
        return _File(ctx.name(".json"), [_json(doc)], 1, (INVALID,), min_rejected=1)
    if ctx.variant.endswith("chat_id"):
        doc = _chat(ctx, external_interaction_id=f"CHAT{ch}{ctx.index}")
        return _File(ctx.name(".json"), [_json(doc)], 1, (INVALID,), min_rejected=1)
    n = ctx.rng.randint(2, 40)
    k = ctx.rng.randrange(n)
    rows = ctx.rows(n)
    if ctx.variant.endswith("id"):
        rows[k] = rows[k].replace("CALL-", f"CALL{ch}-", 1)
    else:
        rows[k] = rows[k].replace("Billing", f"Bil{ch}ling")
    body = (CSV_HEADER + "".join(rows)).encode()
    return _File(ctx.name(".csv"), [body], n, (PARTIAL,), min_rejected=1)


def line_endings(ctx: _Ctx) -> _File:
    """CR-only (classic Mac) and mixed LF / CRLF / CR line endings: rows are still rows."""
    n = ctx.rng.randint(2, 40)
    lines = [CSV_HEADER.rstrip("\n"), *(r.rstrip("\n") for r in ctx.rows(n))]
    if ctx.variant == "cr":
        text = "\r".join(lines) + "\r"
    else:
        text = "".join(line + ctx.rng.choice(("\n", "\r\n", "\r")) for line in lines)
    return _File(ctx.name(".csv"), [text.encode()], n, (PROCESSED,), True)


def unbalanced_quote(ctx: _Ctx) -> _File:
    """A quote that opens a field and never closes: in the header, first, middle or last row.

    Every physical line after the quote is still a row to account for (accepted after the
    parser resynchronises, or rejected); ``garbage`` is a closed quote followed by text.
    """
    n = ctx.rng.choice((20, 100, 1000)) if ctx.rng.random() < 0.2 else ctx.rng.randint(3, 60)
    rows = ctx.rows(n)
    header = CSV_HEADER
    where = ctx.variant
    if where == "header":
        header = header.replace(",team,", ',"team,')
        body = (header + "".join(rows)).encode()
        return _File(ctx.name(".csv"), [body], n, (INVALID,), min_rejected=1)
    k = {"first": 0, "last": n - 1}.get(where, ctx.rng.randrange(1, n - 1))
    if where == "garbage":
        rows[k] = rows[k].replace(",Billing,", ',"Bill"ing,')
    elif ctx.rng.random() < 0.5:
        rows[k] = rows[k].replace(",Billing,", ',"Billing,')
    else:
        rows[k] = rows[k].replace(",resolved\n", ',"resolved\n')
    accept = (PARTIAL, INVALID) if where == "first" else (PARTIAL,)
    body = (header + "".join(rows)).encode()
    return _File(ctx.name(".csv"), [body], n, accept, min_rejected=1)


def header_only(ctx: _Ctx) -> _File:
    """A header and no rows (with or without the final newline), CSV or TSV."""
    ext, text = (
        (".tsv", CSV_HEADER.replace(",", "\t")) if "tsv" in ctx.variant else (".csv", CSV_HEADER)
    )
    if ctx.variant.endswith("unterminated"):
        text = text.rstrip("\n")
    return _File(ctx.name(ext), [text.encode()], 0, (PROCESSED, INVALID), True)


def empty(ctx: _Ctx) -> _File:
    """Zero bytes, with each parsed extension."""
    return _File(ctx.name(f".{ctx.variant}"), [], 0, (PROCESSED, INVALID), True)


_MAGIC = (b"\x1f\x8b\x08\x00", b"PK\x03\x04", b"%PDF-1.7\n", b"\x89PNG\r\n\x1a\n", b"")


def binary_garbage(ctx: _Ctx) -> _File:
    """Random bytes (some behind a gzip, zip, PDF or PNG magic) named like data files."""
    ext = {"none": "", "txt": ".txt"}.get(ctx.variant, f".{ctx.variant}")
    body = ctx.rng.choice(_MAGIC) + ctx.rng.randbytes(ctx.rng.randint(1, 64 * 1024))
    return _File(ctx.name(ext), [body], None, (INVALID,))


def wrong_delimiter(ctx: _Ctx) -> _File:
    """Semicolon, pipe or tab separated data in a .csv, comma separated data in a .tsv."""
    n = ctx.rng.randint(1, 30)
    delimiter, ext = {"semicolon": (";", ".csv"), "pipe": ("|", ".csv"), "tab": ("\t", ".csv")}.get(
        ctx.variant, (",", ".tsv")
    )
    body = _valid_csv(ctx, n, delimiter).encode()
    return _File(ctx.name(ext), [body], n, (INVALID,))


def duplicate_headers(ctx: _Ctx) -> _File:
    """A header naming a column twice: the id (with different values) or a metadata column."""
    n = ctx.rng.randint(1, 30)
    header = CSV_HEADER.rstrip("\n")
    if ctx.variant == "id":
        header += ",external_interaction_id\n"
        rows = [r.rstrip("\n") + f",OTHER-{ctx.index}-{j}\n" for j, r in enumerate(ctx.rows(n))]
        accept: tuple[str, ...] = (INVALID, PARTIAL)
    else:
        header += ",notes,notes\n"
        rows = [r.rstrip("\n") + f",first {j},second {j}\n" for j, r in enumerate(ctx.rows(n))]
        accept = (INVALID, PARTIAL, PROCESSED)
    return _File(ctx.name(".csv"), [(header + "".join(rows)).encode()], n, accept)


def bad_rows(ctx: _Ctx) -> _File:
    """Row-level errors among valid rows: no id, bad timestamps, end before start, unknown
    channel, too few or too many columns."""
    n = ctx.rng.randint(3, 60)
    rows = ctx.rows(n)
    bad = ctx.rng.sample(range(n), ctx.rng.randint(1, max(1, n // 3)))
    breakers: list[Callable[[str], str]] = [
        lambda r: "," + r.split(",", 1)[1],
        lambda r: r.replace("2026-11-20T09:", "2026-13-45T99:", 1),
        lambda r: r.replace("T09:", "T10:", 1),  # starts after it ends
        lambda r: r.replace(",voice,", ",pigeon,", 1),
        lambda r: r.replace(",resolved\n", "\n"),
        lambda r: r.replace(",resolved\n", ",resolved,extra\n"),
    ]
    for k in bad:
        rows[k] = ctx.rng.choice(breakers)(rows[k])
    accept = (PARTIAL,) if len(bad) < n else (INVALID,)
    body = (CSV_HEADER + "".join(rows)).encode()
    return _File(ctx.name(".csv"), [body], n, accept, min_rejected=len(bad))


def bad_chat(ctx: _Ctx) -> _File:
    """Chat transcripts that are JSON but not a conversation, or not JSON at all."""
    docs: dict[str, bytes] = {
        "speaker": _json(_chat(ctx)).replace(b'"agent"', b'"alien"', 1),
        "turns_object": _json(_chat(ctx, turns={"a": 1})),
        "scalar": b"42",
        "truncated": _json(_chat(ctx))[:-40],
        "trailing_comma": b'{"external_interaction_id": "X", "turns": [],}',
    }
    whole = ctx.variant in ("scalar", "truncated", "trailing_comma")
    return _File(
        ctx.name(".json"), [docs[ctx.variant]], 1, (INVALID,), min_rejected=0 if whole else 1
    )


def incomplete_tail(ctx: _Ctx) -> _File:
    """No final newline: the last row cut mid-row (rejected), or complete (accepted)."""
    n = ctx.rng.randint(2, 40)
    text = _valid_csv(ctx, n).rstrip("\n")
    if ctx.variant == "cut":
        text = text[: -ctx.rng.randint(10, 40)]  # the last comma goes: a column short
        return _File(ctx.name(".csv"), [text.encode()], n, (PARTIAL,), min_rejected=1)
    return _File(ctx.name(".csv"), [text.encode()], n, (PROCESSED,), True)


def long_line(ctx: _Ctx) -> _File:
    """10 MB on one line: a field among valid rows, a header, a chat turn's text."""
    filler = (b"x" * 1023 + b" ") * 1024  # 1 MB, streamed ten times

    if ctx.variant == "chat":
        doc = _json(_chat(ctx))
        head, tail = doc.split(b"My router drops.", 1)

        def chat() -> Iterator[bytes]:
            yield head
            for _ in range(10):
                yield filler
            yield tail

        return _File(ctx.name(".json"), chat(), 1, (INVALID,))
    n = ctx.rng.randint(5, 30)
    rows = ctx.rows(n)
    if ctx.variant == "header":

        def header() -> Iterator[bytes]:
            yield CSV_HEADER.rstrip("\n").encode() + b",note"
            for _ in range(10):
                yield filler.replace(b" ", b"_")
            yield b"\n" + "".join(r.rstrip("\n") + ",\n" for r in rows).encode()

        return _File(ctx.name(".csv"), header(), n, (INVALID,))
    k = ctx.rng.randrange(n)

    def field() -> Iterator[bytes]:
        yield (CSV_HEADER.rstrip("\n") + ",note\n").encode()
        for j, r in enumerate(rows):
            yield (r.rstrip("\n") + ",").encode()
            if j == k:
                for _ in range(10):
                    yield filler
            yield b"\n"

    return _File(ctx.name(".csv"), field(), n, (PARTIAL,), min_rejected=1)


def wide_columns(ctx: _Ctx) -> _File:
    """100,000 columns: every cell filled (records too large), or only the known ones."""
    extra = 100_000 - CSV_HEADER.count(",") - 1
    n = 3

    def body() -> Iterator[bytes]:
        yield (CSV_HEADER.rstrip("\n") + "".join(f",c{j}" for j in range(extra)) + "\n").encode()
        full = ctx.variant == "full"  # about 1.6 MB of metadata per row: over any 1 MB limit
        cells = "".join(f",v{j}" for j in range(extra)) if full else "," * extra
        for r in ctx.rows(n):
            yield (r.rstrip("\n") + cells + "\n").encode()

    if ctx.variant == "full":
        return _File(ctx.name(".csv"), body(), n, (INVALID, PARTIAL, PROCESSED))
    return _File(ctx.name(".csv"), body(), n, (PROCESSED, INVALID), True)


def json_deep(ctx: _Ctx) -> _File:
    """JSON nested 100,000 (or 1,000) deep: in turns, in a metadata value, at the top."""
    depth = 1000 if ctx.variant.endswith("1k") else 100_000
    where = ctx.variant.split("_")[0]
    if where == "top":
        body = b"[" * depth + b"]" * depth
    elif where == "turns":
        body = b'{"external_interaction_id": "D", "turns": ' + b"[" * depth + b"]" * depth + b"}"
    else:
        doc = _json(_chat(ctx))[:-2]
        body = doc + b',\n "extra": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    return _File(
        ctx.name(".json"), [body], 1, (INVALID, PROCESSED) if where == "meta" else (INVALID,)
    )


def json_huge_number(ctx: _Ctx) -> _File:
    """A 5,000-digit number: as metadata, as the start time, as a turn time, as a float."""
    digits = "9" * 5000
    doc = _json(_chat(ctx, score=0)).replace(b'"score": 0', b'"score": ' + digits.encode())
    if ctx.variant == "started_at":
        doc = _json(_chat(ctx, started_at=0))
        doc = doc.replace(b'"started_at": 0', b'"started_at": ' + digits.encode())
        return _File(ctx.name(".json"), [doc], 1, (INVALID,), min_rejected=1)
    if ctx.variant == "turn_time":
        doc = _json(_chat(ctx)).replace(b'"2026-11-20T12:00:00Z"', digits.encode(), 1)
        return _File(ctx.name(".json"), [doc], 1, (INVALID,), min_rejected=1)
    if ctx.variant == "float":
        doc = doc.replace(digits.encode(), b"1." + digits.encode() + b"e5000")
    elif ctx.variant == "negative":
        doc = doc.replace(digits.encode(), b"-" + digits.encode())
    return _File(ctx.name(".json"), [doc], 1, (PROCESSED, INVALID))


def json_million_turns(ctx: _Ctx) -> _File:
    """One chat with 1,000,000 turns (about 60 MB), streamed."""

    def body() -> Iterator[bytes]:
        yield f'{{"external_interaction_id": "MANY-{ctx.index}", "turns": ['.encode()
        turn = '{"speaker": "agent", "time": "2026-11-20T12:00:00Z", "text": "ok"}'
        block = ",".join([turn] * 10_000)
        for i in range(100):
            yield (b"," if i else b"") + block.encode()
        yield b"]}"

    return _File(ctx.name(".json"), body(), 1, (INVALID,))


def _name_file(ctx: _Ctx, parts: tuple[bytes, ...], cls: str = SAFE) -> _File:
    """A small valid CSV (or chat, by extension) under a hostile path."""
    if parts[-1].endswith(b".json"):
        return _File(parts, [_json(_chat(ctx))], 1, (PROCESSED,), True, name=cls)
    n = ctx.rng.randint(1, 3)
    return _File(parts, [_valid_csv(ctx, n).encode()], n, (PROCESSED,), True, name=cls)


def _unique(ctx: _Ctx, name: bytes) -> bytes:
    """Prefix a hostile name with the member index so names never collide."""
    return str(ctx.index).encode() + name


_NAMES_NEWLINE = (b"a\nb.csv", b"\n.csv", b"x\r\n.csv", b"two\n\nlines.json", b"cr\r.csv")
_NAMES_CONTROL = (
    b"\x01start.csv",
    b"\x1b[31mred\x1b[0m.csv",
    b"del\x7f.csv",
    b"tab\tname.csv",
    b"bell\x07.json",
    b"us\x1f.csv",
    b"esc\x1b]0;title\x07.csv",
)


def names(ctx: _Ctx) -> _File:
    """Hostile names around valid content (see each variant)."""
    folder = b"names"
    v = ctx.variant
    if v == "newline":
        return _name_file(ctx, (folder, _unique(ctx, ctx.rng.choice(_NAMES_NEWLINE))), MAY_SKIP)
    if v == "control":
        return _name_file(ctx, (folder, _unique(ctx, ctx.rng.choice(_NAMES_CONTROL))), MAY_SKIP)
    if v == "invalid_utf8":
        raw = ctx.rng.choice((b"caf\xe9.csv", b"\xff\xfe.csv", b"\xc3(.json", b"x\xed\xa0\x80.csv"))
        return _name_file(ctx, (folder, _unique(ctx, raw)), MAY_SKIP)
    if v == "dotdot_leading":  # '.*' is excluded by default: these are never announced
        raw = ctx.rng.choice((b"..", b"...", b"..\\..\\etc\\passwd", b"..\n"))
        return _name_file(ctx, (folder, raw + str(ctx.index).encode() + b".csv"), EXCLUDED)
    if v == "dotdot":
        raw = ctx.rng.choice((b"a..b.csv", b"x..\\..\\etc.csv", b"%2e%2e%2fetc.csv", b"dots...csv"))
        return _name_file(ctx, (folder, b"dd..", _unique(ctx, raw)))
    if v == "absolute":
        raw = ctx.rng.choice(
            (
                b"\\etc\\passwd.csv",
                b"C:\\Windows\\win.csv",
                b"~root.csv",
                b"%2Fetc%2Fpasswd.csv",
                b"file:etc.csv",
                b"\\\\server\\share.csv",
            )
        )
        return _name_file(ctx, (folder, b"abs", b"etc", _unique(ctx, raw)))
    if v == "long255":
        stem = f"{ctx.index}-".encode()
        if ctx.rng.random() < 0.5:
            raw = stem + b"L" * (255 - len(stem) - 4) + b".csv"
        else:  # 2-byte characters: 255 bytes, far fewer characters
            body = "é" * ((255 - len(stem) - 4) // 2)
            raw = stem + body.encode() + b"P" * ((255 - len(stem) - 4) % 2) + b".csv"
        assert len(raw) == 255
        return _name_file(ctx, (folder, b"long", raw))
    if v == "deep":  # 100 folders, or 14 folders of 255-byte names: under PATH_MAX either way
        if ctx.rng.random() < 0.5:
            parts = tuple(f"d{i}".encode() for i in range(100))
        else:
            parts = tuple(f"{i:02d}".encode() + b"D" * 253 for i in range(14))
        path = (folder, b"deep", str(ctx.index).encode(), *parts, b"f.csv")
        # callstream serves paths of at most 1,024 characters (its state column): longer ones
        # are skipped as unsafe names, on purpose.
        cls = MAY_SKIP if len(b"/".join(path)) > 1024 else SAFE
        return _name_file(ctx, path, cls)
    if v == "beyond_path_max":  # only openat can reach it; a service may skip it
        parts = tuple(f"{i:02d}".encode() + b"E" * 253 for i in range(18))
        return _name_file(
            ctx, (folder, b"pathmax", str(ctx.index).encode(), *parts, b"f.csv"), MAY_SKIP
        )
    raw = ctx.rng.choice(
        (
            "\u202egnp.csv".encode(),  # right-to-left override
            "cafe\u0301.csv".encode(),  # NFD
            "caf\u00e9.csv".encode(),  # NFC: a different name from the NFD one
            "zero\u200bwidth.csv".encode(),
            "full\uff0fwidth\uff0fslash.csv".encode(),
            "emoji\U0001f4de.json".encode(),
            b"CON.csv",
            b"UPPER.CSV",
        )
    )
    return _name_file(ctx, (folder, b"unicode", _unique(ctx, raw)))


FAMILIES: tuple[Family, ...] = (
    Family("valid_csv", ("lf", "crlf"), valid_csv, weight=12),
    Family("valid_tsv", ("tsv",), valid_tsv, weight=3),
    Family("valid_chat", ("object", "list"), valid_chat, weight=6),
    Family("quoted_multiline", ("quoted",), quoted_multiline, weight=2),
    Family("blank_lines", ("blank",), blank_lines, weight=1),
    Family("bom_utf8", ("csv", "chat"), bom_utf8, weight=3),
    Family("wide_encoding", tuple(_WIDE), wide_encoding, weight=4),
    Family("invalid_utf8", ("field", "header", "chat"), invalid_utf8, weight=4),
    Family("truncated_utf8", ("eof", "midfile"), truncated_utf8, weight=2),
    Family(
        "control_chars",
        ("nul_id", "nul_field", "nul_chat", "ctl_id", "ctl_field", "ctl_chat", "nul_chat_id"),
        control_chars,
        weight=6,
    ),
    Family("line_endings", ("cr", "mixed"), line_endings, weight=3),
    Family(
        "unbalanced_quote", ("header", "first", "middle", "last", "garbage"), unbalanced_quote, 6
    ),
    Family("header_only", ("csv", "csv_unterminated", "tsv", "tsv_unterminated"), header_only, 2),
    Family("empty", ("csv", "tsv", "json"), empty, weight=2),
    Family("binary_garbage", ("csv", "tsv", "json", "txt", "none"), binary_garbage, weight=3),
    Family("wrong_delimiter", ("semicolon", "pipe", "tab", "comma_in_tsv"), wrong_delimiter, 3),
    Family("duplicate_headers", ("id", "metadata"), duplicate_headers, weight=2),
    Family("bad_rows", ("mixed",), bad_rows, weight=4),
    Family(
        "bad_chat",
        ("speaker", "turns_object", "scalar", "truncated", "trailing_comma"),
        bad_chat,
        2,
    ),
    Family("incomplete_tail", ("cut", "complete"), incomplete_tail, weight=2),
    Family(
        "json_huge_number",
        ("metadata", "started_at", "turn_time", "float", "negative"),
        json_huge_number,
        2,
    ),
    Family("json_deep_1k", ("turns_1k", "meta_1k", "top_1k"), json_deep, weight=1),
    Family(
        "names",
        (
            "newline",
            "control",
            "invalid_utf8",
            "dotdot_leading",
            "dotdot",
            "absolute",
            "long255",
            "deep",
            "unicode",
        ),
        names,
        weight=6,
    ),
    Family("names_beyond_path_max", ("beyond_path_max",), names, big=(1, 1)),
    Family("json_deep_100k", ("turns", "meta", "top"), json_deep, big=(3, 3)),
    Family("long_line_10mb", ("field", "header", "chat"), long_line, big=(1, 3)),
    Family("wide_100k_columns", ("full", "sparse"), wide_columns, big=(2, 2)),
    Family("json_million_turns", ("million",), json_million_turns, big=(1, 2)),
)


def plan(count: int, skip: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Return the (family, variant) of each of ``count`` files, in generation order."""
    skipped = set(skip)
    unknown = skipped - {f.name for f in FAMILIES}
    if unknown:
        raise ValueError(f"unknown famil(ies): {', '.join(sorted(unknown))}")
    families = [f for f in FAMILIES if f.name not in skipped]
    counts: dict[str, int] = {}
    for f in families:
        if f.big is not None:
            counts[f.name] = f.big[1] if count >= 10_000 else f.big[0]
    small = [f for f in families if f.big is None]
    left = count - sum(counts.values())
    if left < len(small):
        raise ValueError(
            f"--count {count} is too small: at least {sum(counts.values()) + len(small)}"
        )
    total = sum(f.weight for f in small)
    shares = {f.name: left * f.weight / total for f in small}
    for f in small:
        counts[f.name] = max(1, int(shares[f.name]))
    by_remainder = sorted(small, key=lambda f: shares[f.name] - int(shares[f.name]), reverse=True)
    i = 0
    while sum(counts.values()) < count:
        counts[by_remainder[i % len(by_remainder)].name] += 1
        i += 1
    while sum(counts.values()) > count:  # the max(1, ...) floors overshot: trim the largest
        counts[max(small, key=lambda f: counts[f.name]).name] -= 1
    out = []
    for f in families:
        out += [(f.name, f.variants[k % len(f.variants)]) for k in range(counts[f.name])]
    return out


# -- writing -------------------------------------------------------------------------------------


def _check_name(name: bytes) -> None:
    if not name or name in (b".", b"..") or b"/" in name or b"\x00" in name or len(name) > 255:
        raise ValueError(f"refusing unsafe path component {name!r}")


class SafeTree:
    """Writes files below one folder through ``openat``: nothing can land outside it."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self._root = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def close(self) -> None:
        """Release the root descriptor."""
        os.close(self._root)

    def _folder(self, parts: tuple[bytes, ...]) -> int:
        fd = os.dup(self._root)
        try:
            for name in parts:
                _check_name(name)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                child = os.open(name, flags, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def write(self, parts: tuple[bytes, ...], chunks: Iterable[bytes]) -> int:
        """Create ``parts`` (folders then a new file) and stream ``chunks`` into it."""
        _check_name(parts[-1])
        folder = self._folder(parts[:-1])
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(parts[-1], flags, 0o644, dir_fd=folder)
        finally:
            os.close(folder)
        size = 0
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    size += n
        finally:
            os.close(fd)
        return size


def generate(root: Path, count: int, seed: int = 1, skip: Iterable[str] = ()) -> Iterator[Member]:
    """Write the corpus under ``root`` one file at a time, yielding each file's description."""
    by_name = {f.name: f for f in FAMILIES}
    tree = SafeTree(root)
    try:
        for index, (family, variant) in enumerate(plan(count, skip)):
            made = by_name[family].build(_Ctx(seed, index, family, variant))
            size = tree.write(made.parts, made.chunks)
            yield Member(
                path=os.fsdecode(b"/".join(made.parts)),
                family=family,
                variant=variant,
                rows=made.rows,
                accept=made.accept,
                all_valid=made.all_valid,
                min_rejected=made.min_rejected,
                name=made.name,
                size=size,
            )
    finally:
        tree.close()


def main(argv: list[str] | None = None) -> int:
    """Write a corpus and its manifest; print what was written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder to write into (created; must be empty)")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-family", action="append", default=[], metavar="NAME")
    parser.add_argument("--manifest", type=Path, help="default: <root>.manifest.jsonl")
    args = parser.parse_args(argv)
    if args.root.exists() and any(args.root.iterdir()):
        parser.error(f"{args.root} is not empty")
    manifest = args.manifest or args.root.with_name(args.root.name + ".manifest.jsonl")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    families: Counter[str] = Counter()
    size = 0
    with manifest.open("w") as out:
        for member in generate(args.root, args.count, args.seed, args.skip_family):
            out.write(json.dumps(asdict(member)) + "\n")
            families[member.family] += 1
            size += member.size
    print(
        f"{sum(families.values())} files, {size / MB:.1f} MB in {time.monotonic() - started:.1f}s "
        f"under {args.root}; manifest {manifest}"
    )
    for name, n in sorted(families.items()):
        print(f"  {name:24} {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
