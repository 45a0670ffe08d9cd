"""Fuzz the CSV parser: ``parse(io.BytesIO(data), "x.csv", ...)`` to the end, every row checked.

Properties: :func:`invariants.check_parse`. Run through ``runner.py`` (see its doc) or by hand
with libFuzzer's flags: ``.venv/bin/python tests/fuzz/fuzz_csv.py -runs=100000``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from atheris.import_hook import instrument_imports

with instrument_imports(include=["streams"]):
    from streams.ingest.parse import ALIASES, CHANNELS, DIRECTIONS

from runner import fuzz_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from support import CSV_HEADER, conversation_row


def seeds(delimiter: str) -> list[bytes]:
    """Valid exports and the shapes the parser handles specially, with ``delimiter``."""
    header = CSV_HEADER.replace(",", delimiter)
    rows = [conversation_row(i).replace(",", delimiter) for i in range(3)]
    d = delimiter
    texts = [
        header + "".join(rows),
        "\ufeff" + header + rows[0].replace("\n", "\r\n"),  # BOM and CRLF
        header,  # header only
        header + "\n\n" + rows[1],  # blank lines
        header + rows[2].rstrip("\n"),  # no final line terminator
        f'call_id{d}start_time{d}notes\nC-1{d}1763629272{d}"two\nlines, ""quoted"""\n',
        f"session_id{d}start{d}end{d}agent\nS-9{d}2026-11-20 09:00:00{d}2026-11-20 09:00:30{d}x\n",
        f"interaction_id{d}channel{d}direction{d}started_at\nI-1{d}CHAT{d}Outbound{d}2026-11-20\n",
        f"external_interaction_id{d}started_at{d}ended_at\nE-1{d}2026-11-20T10:00:00+02:00"
        f"{d}2026-11-20T07:00:00Z\n",  # ends before it starts
    ]
    texts += [
        header.replace("campaign", "x" * 1100),  # a header field over the limit
        header + rows[0].replace("winter", "w" * 1100),  # a field over the limit
    ]
    return [t.encode() for t in texts] + [header.encode() + b"C\xff\xfe" + d.encode() + b"x\n"]


#: Dictionary: CSV syntax, the column aliases and values the parser compares against.
TOKENS = [
    b'"',
    b'""',
    b"\r\n",
    b"\r",
    b"\t",
    b",",
    b"\xef\xbb\xbf",
    b"\x00",
    *(name.encode() for names in ALIASES.values() for name in names),
    *(value.encode() for value in (*CHANNELS, *DIRECTIONS)),
    b"2026-11-20T09:00:00Z",
    b"2026-11-20 09:00:00+05:30",
    b"1763629272.5",
    b"CallID",
    b"Call Start",
]

if __name__ == "__main__":
    fuzz_main("csv", seeds(","), TOKENS)
