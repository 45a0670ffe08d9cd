"""Fuzz the TSV parser: ``parse(io.BytesIO(data), "x.tsv", ...)`` to the end, every row checked.

The CSV harness's seeds with tabs; properties: :func:`invariants.check_parse`.
"""

from __future__ import annotations

from atheris.import_hook import instrument_imports

with instrument_imports(include=["streams"]):
    import streams.ingest.parse  # noqa: F401 - instrumented here, called through invariants

from fuzz_csv import TOKENS, seeds
from runner import fuzz_main

if __name__ == "__main__":
    fuzz_main("tsv", seeds("\t"), TOKENS)
