"""Include/exclude globs of a connector: glob_to_regex and PathFilter."""

from __future__ import annotations

import pytest

from connectors.poller import PathFilter, PollConfig, glob_to_regex


def matches(glob: str, path: str) -> bool:
    return glob_to_regex(glob).match(path) is not None


def default_filter(include: tuple[str, ...] = ("**",)) -> PathFilter:
    return PathFilter(include, PollConfig().exclude)


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        # '**/' spans zero or more folders
        ("recordings/**/*.wav", "recordings/x.wav", True),
        ("recordings/**/*.wav", "recordings/a/x.wav", True),
        ("recordings/**/*.wav", "recordings/a/b/x.wav", True),
        ("recordings/**/*.wav", "other/recordings/x.wav", False),
        ("recordings/**/*.wav", "recordings/a/b/x.wav.tmp", False),
        ("recordings/**/*.wav", "recordings.wav", False),
        ("**/*.csv", "a.csv", True),
        ("**/*.csv", "a/b/c.csv", True),
        ("in/**", "in/a/b.csv", True),
        ("**", "a/b/c", True),
        # '*' and '?' stay within one name
        ("in/*.csv", "in/a.csv", True),
        ("in/*.csv", "in/sub/a.csv", False),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("a?c", "ac", False),
        ("in/?.csv", "in/x.csv", True),
        ("in/?.csv", "in/xy.csv", False),
        # character classes
        ("x[0-9].csv", "x5.csv", True),
        ("x[0-9].csv", "xa.csv", False),
        ("x[abc].csv", "xb.csv", True),
        ("x[!0-9].csv", "xa.csv", True),
        ("x[!0-9].csv", "x5.csv", False),
        # everything else is literal, not regex syntax
        ("a.b", "axb", False),
        ("a+b(1).csv", "a+b(1).csv", True),
        ("[abc", "[abc", True),
        ("a$b^c", "a$b^c", True),
        # anchored at both ends
        ("*.csv", "a.csv.bak", False),
        ("b.csv", "ab.csv", False),
    ],
)
def test_glob_to_regex(glob: str, path: str, expected: bool) -> None:
    assert matches(glob, path) is expected


def test_negated_character_class_does_not_match_a_folder_separator() -> None:
    # Meant: files directly in rec/ whose name starts with '20' and a non-'0' character.
    assert not matches("rec/20[!0]*.wav", "rec/20/old.wav")


def test_name_only_globs_match_the_file_name_in_any_folder() -> None:
    f = default_filter(("*.csv",))
    assert f("a.csv")
    assert f("x/y/z/a.csv")
    assert not f("a.wav")
    assert not f("a.csv/b.wav")  # a folder called a.csv does not make its files match


def test_globs_with_a_slash_match_the_path_from_the_root() -> None:
    f = default_filter(("recordings/**/*.wav", "daily/*.csv"))
    assert f("recordings/x.wav")
    assert f("recordings/2024/05/x.wav")
    assert f("daily/a.csv")
    assert not f("x.wav")
    assert not f("archive/recordings/x.wav")
    assert not f("daily/sub/a.csv")
    assert not f("a.csv")


def test_a_file_matching_any_include_glob_is_included() -> None:
    f = default_filter(("*.csv", "recordings/**/*.wav"))
    included = [
        p
        for p in [
            "a.csv",
            "x/y/a.csv",
            "recordings/r.wav",
            "recordings/a/r.wav",
            "o/r.wav",
            "r.mp3",
        ]
        if f(p)
    ]
    assert included == ["a.csv", "x/y/a.csv", "recordings/r.wav", "recordings/a/r.wav"]


@pytest.mark.parametrize(
    "path",
    [
        ".hidden",
        "in/.x.csv",
        "a.csv.tmp",
        "in/a.tmp",
        "a.part",
        "upload/a.wav.part",
        "a.csv.filepart",
        "in/sub/a.filepart",
    ],
)
def test_default_excludes_drop_hidden_and_temporary_upload_names(path: str) -> None:
    assert default_filter()(path) is False


@pytest.mark.parametrize("path", ["a.csv", "in/a.wav", "a.tmp.csv", "partial.csv", "x.parts"])
def test_default_include_takes_every_other_file(path: str) -> None:
    assert default_filter()(path) is True


def test_exclude_wins_over_include() -> None:
    f = PathFilter(["*.csv"], ["skip/**", "*-draft.csv"])
    assert f("a.csv")
    assert not f("skip/a.csv")
    assert not f("skip/deep/a.csv")
    assert not f("in/report-draft.csv")


def test_no_include_glob_matches_nothing() -> None:
    assert PathFilter([], [])("a.csv") is False


@pytest.mark.parametrize("path", [".cache/a.csv", "calls/.partial/b.csv", "x/.hidden.csv"])
def test_default_excludes_cover_hidden_folders_too(path: str) -> None:
    config = PollConfig()
    assert not PathFilter(config.include, config.exclude)(path)
