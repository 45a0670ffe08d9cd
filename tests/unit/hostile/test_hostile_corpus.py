"""The hostile-corpus generator: deterministic, complete, and unable to write outside its root."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hostile"))

import corpus

BIG = ("json_million_turns", "long_line_10mb")  # tens of MB each: covered by `make hostile`


def _digest(root: Path) -> dict[bytes, str]:
    """Relative path -> sha256 of every file, walking with descriptors (paths > PATH_MAX)."""
    out: dict[bytes, str] = {}
    for folder, _dirs, files, fd in os.fwalk(os.fsencode(root)):
        for name in files:
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            with os.fdopen(child, "rb") as fh:
                rel = os.path.relpath(os.path.join(folder, name), os.fsencode(root))
                out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_the_same_seed_writes_the_same_names_and_bytes(tmp_path: Path) -> None:
    first = list(corpus.generate(tmp_path / "a", 150, seed=7, skip=BIG))
    second = list(corpus.generate(tmp_path / "b", 150, seed=7, skip=BIG))
    other = list(corpus.generate(tmp_path / "c", 150, seed=8, skip=BIG))
    assert first == second
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert [m.family for m in first] == [m.family for m in other]  # the plan is the count's


def test_a_slice_has_the_count_asked_for_and_every_family(tmp_path: Path) -> None:
    members = list(corpus.generate(tmp_path / "in", 1000, skip=BIG))
    assert len(members) == len({m.path for m in members}) == 1000
    expected = {f.name for f in corpus.FAMILIES} - set(BIG)
    assert {m.family for m in members} == expected
    written = _digest(tmp_path / "in")
    assert len(written) == 1000
    assert max(len(os.fsencode(m.path)) for m in members) > 4096  # beyond PATH_MAX
    assert any(m.name == corpus.MAY_SKIP and "\n" in m.path for m in members)


def test_the_full_corpus_has_ten_thousand_files_and_more_big_ones() -> None:
    plan = corpus.plan(10_000)
    assert len(plan) == 10_000
    families = {f for f, _ in plan}
    assert families == {f.name for f in corpus.FAMILIES}
    assert sum(1 for f, _ in plan if f == "long_line_10mb") == 3


def test_the_generator_never_follows_a_planted_link(tmp_path: Path) -> None:
    root, outside = tmp_path / "in", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "valid_csv").symlink_to(outside)
    with pytest.raises(OSError):
        list(corpus.generate(root, 150, skip=BIG))
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("parts", [(b"..", b"x.csv"), (b"a/b", b"x.csv"), (b"x", b"."), (b"n\0",)])
def test_unsafe_components_are_refused(tmp_path: Path, parts: tuple[bytes, ...]) -> None:
    tree = corpus.SafeTree(tmp_path / "in")
    try:
        with pytest.raises(ValueError, match="unsafe path component"):
            tree.write(parts, [b"data"])
    finally:
        tree.close()
    assert list((tmp_path / "in").iterdir()) == []
