"""Fuzz recording metadata files: ``streams.ingest.metadata.read_metadata`` (XML through
defusedxml, JSON, CSV, YAML; the first byte picks the format).

Properties: :func:`invariants.check_metadata` (only ``FileRejected`` with a metadata reason
escapes; accepted fields are flat text within the limits, without control characters).
"""

from __future__ import annotations

from atheris.import_hook import instrument_imports

with instrument_imports(include=["streams.ingest.metadata", "defusedxml", "yaml"]):
    import streams.ingest.metadata  # noqa: F401 - instrumented here, called through invariants

from runner import fuzz_main

SEEDS = [
    b"\x00<call><disposition>sale</disposition><account>ACME</account></call>",
    b'\x00<call><field name="a">1</field></call>',
    b'\x00<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><c><d>&a;</d></c>',
    b'\x01{"caller_id": "+14155550100", "disposition": "sale", "amount": 1200.5}',
    b'\x01{"contact": {"name": "Ann"}}',
    b"\x02caller_id,disposition\r\n+14155550100,sale\r\n",
    b'\x02a;b\n"x;y";2\n',
    b"\x03caller_id: '+1415'\ndisposition: sale\n",
    b"\x03a: &a [x, x]\nb: [*a, *a]\n",
]
TOKENS = [b"<!ENTITY", b"<!DOCTYPE", b"&a;", b"\\u0000", b"&", b"*", b"!!", b'"', b"\r\n"]

if __name__ == "__main__":
    fuzz_main("metadata", SEEDS, TOKENS)
