"""Connector-relative paths: one normal form and no way out of the root."""

from __future__ import annotations

import pytest

from connectors import paths
from connectors.errors import UnsafePath


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a.csv", "a.csv"),
        ("a/b/c.csv", "a/b/c.csv"),
        ("./a//b", "a/b"),
        ("a/./b/", "a/b"),
        ("a///b/./c//", "a/b/c"),
        ("...", "..."),
        ("a/..b/c..", "a/..b/c.."),
    ],
)
def test_normalize_returns_the_one_normal_form(raw: str, expected: str) -> None:
    assert paths.normalize(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "/etc/passwd",
        "/",
        "..",
        "../x",
        "a/../b",
        "a/b/..",
        "a/../../etc/passwd",
        "./../x",
        "",
        ".",
        "./",
        "//",
        "a\x00b",
        "\x00",
    ],
)
def test_normalize_refuses_paths_that_leave_the_root_or_are_empty(raw: str) -> None:
    with pytest.raises(UnsafePath):
        paths.normalize(raw)


def test_unsafe_path_is_not_retried() -> None:
    with pytest.raises(UnsafePath) as info:
        paths.normalize("../secrets")
    assert info.value.retriable is False
    assert info.value.kind == "unsafe_path"


@pytest.mark.parametrize(
    ("root", "path", "expected"),
    [
        ("/upload", "a/b.csv", "/upload/a/b.csv"),
        ("/upload/", "a/b.csv", "/upload/a/b.csv"),
        ("/", "a.csv", "/a.csv"),
        ("", "./a//b", "a/b"),
        ("upload", "x", "upload/x"),
    ],
)
def test_join_places_the_path_under_the_root(root: str, path: str, expected: str) -> None:
    assert paths.join(root, path) == expected


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "", "a\x00"])
@pytest.mark.parametrize("root", ["/upload", ""])
def test_join_refuses_anything_that_escapes(root: str, path: str) -> None:
    with pytest.raises(UnsafePath):
        paths.join(root, path)


@pytest.mark.parametrize("name", ["a.csv", ".hidden", "...", "a b", "ünïcode.wav", "x..y"])
def test_is_safe_name_accepts_ordinary_names(name: str) -> None:
    assert paths.is_safe_name(name) is True


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/", "a\x00b"])
def test_is_safe_name_refuses_unusable_names(name: str) -> None:
    assert paths.is_safe_name(name) is False


@pytest.mark.parametrize(("path", "expected"), [("a/b/c.csv", "a/b"), ("c.csv", ""), ("a/b", "a")])
def test_parent_is_the_containing_folder(path: str, expected: str) -> None:
    assert paths.parent(path) == expected


def test_a_name_that_is_not_utf8_is_unsafe() -> None:
    # os.scandir decodes undecodable bytes as surrogates: such a name cannot be hashed or stored
    assert not paths.is_safe_name("x\udced\udca0.csv")
