"""Fuzz the TSV parser: ``parse(io.BytesIO(data), "x.tsv", ...)`` to the end, every row checked.

TSV runs with a column mapping and a local time zone (:data:`invariants.MAPPED`), so it also
covers those paths. Seeds: the CSV harness's, with tabs, half of them with the mapped header.
Properties: :func:`invariants.check_parse`.
"""

from __future__ import annotations

from atheris.import_hook import instrument_imports

with instrument_imports(include=["streams"]):
    import streams.ingest.parse  # noqa: F401 - instrumented here, called through invariants

from fuzz_csv import TOKENS, seeds
from runner import fuzz_main


def mapped_seeds() -> list[bytes]:
    """The CSV seeds with tabs, as they are and with the columns :data:`MAPPED` names."""
    plain = seeds("\t")
    mapped = [
        s.replace(b"external_interaction_id", b"CallID").replace(b"started_at", b"Call Start")
        for s in plain
    ]
    return plain + mapped


if __name__ == "__main__":
    fuzz_main("tsv", mapped_seeds(), TOKENS)
