"""Retention helpers: the streaming gzip, which folders are walked, archive names, settings."""

from __future__ import annotations

import gzip
import io
import os

import pytest
from pydantic import ValidationError

from streams import retention
from streams.settings import RetentionConfig


def test_the_gzip_stream_compresses_as_it_is_read_and_round_trips() -> None:
    data = os.urandom(300_000) + b"x" * 3_000_000
    stream = retention.gzipped(io.BytesIO(data))
    parts = []
    while chunk := stream.read(65_536):
        assert len(chunk) <= 65_536
        parts.append(chunk)
    assert gzip.decompress(b"".join(parts)) == data


def test_an_empty_file_gives_a_valid_empty_gzip() -> None:
    assert gzip.decompress(retention.gzipped(io.BytesIO(b"")).read()) == b""


def test_only_the_retention_folders_are_walked_and_never_their_archive() -> None:
    prune = retention._prune_for(["processed", "done/invalid"], "archive")
    assert not prune("processed") and not prune("processed/2026/11")
    assert not prune("done") and not prune("done/invalid")
    assert prune("processed/archive") and prune("processed/archive/x")
    assert prune("inbox") and prune("done/other") and prune("processedx")


def test_archive_names_keep_the_path_inside_the_folder() -> None:
    name = retention._archive_name("processed/a/b.csv", ["processed"], "archive")
    assert name == "processed/archive/a/b.csv.gz"
    stamped = retention._stamped(name, 1_700_000_000)
    assert stamped == "processed/archive/a/b.csv.20231114T221320Z.gz"


@pytest.mark.parametrize("bad", ["/abs", "..", "a/../b", "", "./x"])
def test_the_archive_folder_stays_inside_the_store(bad: str) -> None:
    with pytest.raises(ValidationError):
        RetentionConfig(action="archive", archive_dir=bad)


def test_the_default_keeps_everything() -> None:
    assert RetentionConfig().action == "keep" and RetentionConfig().days == 7
