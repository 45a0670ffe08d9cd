"""Small helpers of the connector runner: Backoff, file_id and file_key."""

from __future__ import annotations

import hashlib
import re

import pytest

from streams.runner import Backoff, file_id, file_key

# -- Backoff ------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_max() -> None:
    b = Backoff(1.0, 60.0)
    assert [b.next() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_backoff_max_need_not_be_a_power_of_two_of_initial() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_reset_starts_again_from_initial() -> None:
    b = Backoff(1.0, 8.0)
    for _ in range(6):
        b.next()
    b.reset()
    assert [b.next() for _ in range(3)] == [1, 2, 4]


def test_backoff_with_equal_initial_and_max_is_constant() -> None:
    b = Backoff(5.0, 5.0)
    assert [b.next() for _ in range(3)] == [5, 5, 5]


def test_backoff_never_exceeds_the_max() -> None:
    b = Backoff(120.0, 60.0)
    assert max(b.next() for _ in range(3)) <= 60.0


# -- file_id ------------------------------------------------------------------------------------


def test_file_id_is_deterministic_32_hex() -> None:
    a = file_id("acme", "sftp-daily", "in/a.csv", "v" * 32)
    assert a == file_id("acme", "sftp-daily", "in/a.csv", "v" * 32)
    assert re.fullmatch(r"[0-9a-f]{32}", a)


def test_file_id_is_stable_across_releases() -> None:
    """Consumers de-duplicate re-announcements by file_id: the formula must never change."""
    raw = "acme\x00sftp-daily\x00in/a.csv\x00" + "0" * 32
    expected = hashlib.sha256(raw.encode()).hexdigest()[:32]
    assert file_id("acme", "sftp-daily", "in/a.csv", "0" * 32) == expected


@pytest.mark.parametrize(
    "other",
    [
        ("acme", "sftp-daily", "in/a.csv", "w" * 32),  # a re-upload
        ("globex", "sftp-daily", "in/a.csv", "v" * 32),  # another tenant
        ("acme", "local", "in/a.csv", "v" * 32),  # another connector
        ("acme", "sftp-daily", "in/b.csv", "v" * 32),  # another file
        ("acme", "sftp-dailyin/a.csv", "", "v" * 32),  # the same characters, split differently
    ],
)
def test_file_id_differs_for_any_other_file_version(other: tuple[str, str, str, str]) -> None:
    assert file_id("acme", "sftp-daily", "in/a.csv", "v" * 32) != file_id(*other)


# -- file_key -----------------------------------------------------------------------------------


def test_file_key_is_tenant_connector_path() -> None:
    assert file_key("acme", "sftp-daily", "in/2024/a.csv") == "acme/sftp-daily/in/2024/a.csv"


def test_file_key_is_the_same_for_every_version_of_a_path() -> None:
    """Every event of a path goes to one partition, in order."""
    assert file_key("acme", "c", "a.csv") == file_key("acme", "c", "a.csv")
    assert file_key("acme", "c", "a.csv") != file_key("globex", "c", "a.csv")
