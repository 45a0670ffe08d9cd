"""Fuzz the chat transcript parser: ``parse(io.BytesIO(data), "x.json", ...)``, checked.

Properties: :func:`invariants.check_parse`. Seeds: the demo transcript and the other shapes the
parser reads (a bare list of turns, ``message``/``at`` keys, epoch times, flat metadata).
"""

from __future__ import annotations

import json

from atheris.import_hook import instrument_imports

with instrument_imports(include=["streams"]):
    from streams.ingest.parse import CHANNELS, DIRECTIONS, FIELDS, SPEAKERS

from runner import fuzz_main

import streams.demo

DEMO = streams.demo.__file__.replace("__init__.py", "files/chats/CHAT-2001.json")


def seeds() -> list[bytes]:
    """The demo transcript and variations of it."""
    with open(DEMO, "rb") as f:
        demo = f.read()
    doc = json.loads(demo)
    turns = doc["turns"]
    docs = [
        turns,  # a bare list of turns
        {**doc, "turns": [{"speaker": "visitor", "at": 1763629202, "message": "hi"}]},
        {"external_interaction_id": 42, "started_at": "2026-11-20T12:00:00", "csat": 4.5},
        {"channel": "email", "direction": "inbound", "vip": True, "turns": []},
        {"turns": [{"speaker": "bot", "text": "x", "time": None}]},
        {"turns": [{"speaker": "agent"}]},  # a turn without text
    ]
    return [demo, "\ufeff".encode() + demo] + [json.dumps(d).encode() for d in docs]


#: Dictionary: JSON syntax and escapes, the keys and values the parser looks for.
TOKENS = [
    *(t.encode() for t in ("{", "}", "[", "]", ":", ",", "null", "true", "false", "-0", "1e999")),
    *(t.encode() for t in ('"\\u0000"', '"\\ud800"', '"\\n"', '"\\""', "\xef\xbb\xbf")),
    *(f'"{name}"'.encode() for name in (*FIELDS, "turns", "speaker", "text", "message", "time")),
    *(f'"{value}"'.encode() for value in (*CHANNELS, *DIRECTIONS, *SPEAKERS, "visitor", "bot")),
    b'"2026-11-20T12:00:02Z"',
    b"1763629202",
]

if __name__ == "__main__":
    fuzz_main("chat", seeds(), TOKENS)
