"""The drop box's confinement and layout rules, on a real temporary folder (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncssh import SFTPError, SFTPFileAlreadyExists, SFTPNoSuchFile, SFTPPermissionDenied

from connectors.local import LocalConfig
from streams.control.dropbox import check_password, hash_password
from streams.dropbox.workspace import Rules, Workspace

READ_ONLY = ("processed", "invalid", "archive")


def workspace(tmp_path: Path, layout: str = "data") -> Workspace:
    ws = Workspace(
        LocalConfig(root=tmp_path / "acct", create=True),
        Rules(layout=layout, sources_folder="sources", read_only=READ_ONLY),  # type: ignore[arg-type]
    )
    ws.prepare()
    return ws


@pytest.mark.parametrize(
    ("client", "rel"),
    [
        (b"/", ""),
        (b".", ""),
        (b"/data/x.csv", "data/x.csv"),
        (b"data/./x.csv", "data/x.csv"),
        (b"data/sub/../x.csv", "data/x.csv"),
        (b"//data//x.csv", "data/x.csv"),
    ],
)
def test_client_paths_resolve_inside_the_folder(client: bytes, rel: str) -> None:
    assert Workspace.resolve(client) == rel


@pytest.mark.parametrize("client", [b"..", b"/..", b"../x", b"data/../../x", b"/data/../../etc"])
def test_a_path_that_climbs_out_is_refused(client: bytes) -> None:
    with pytest.raises(SFTPPermissionDenied, match="leaves your folder"):
        Workspace.resolve(client)


def test_control_characters_and_non_utf8_names_are_refused() -> None:
    for bad in (b"data/a\nb.csv", b"data/\xff.csv"):
        with pytest.raises(SFTPNoSuchFile):
            Workspace.resolve(bad)


def test_data_layout_takes_files_in_data_only_and_no_folders(tmp_path: Path) -> None:
    rules = workspace(tmp_path).rules
    assert rules.may_write("data/20201012-140253_joe.wav")
    for rel in ("top.csv", "data/sub/x.csv", "processed/data/x.csv", "invalid/x.csv", ""):
        assert not rules.may_write(rel), rel
    assert not rules.may_write("data/.x.csv.callstream-0123456789abcdef.part")
    assert not rules.may_make_folder("data/sub")
    assert not rules.may_make_folder("other")


def test_sources_layout_takes_files_in_type_folders(tmp_path: Path) -> None:
    rules = workspace(tmp_path, "sources").rules
    assert rules.may_write("sources/order/20200125_order.csv")
    assert not rules.may_write("sources/20200125_order.csv")
    assert not rules.may_write("sources/order/deep/x.csv")
    assert rules.may_make_folder("sources/member")
    assert not rules.may_make_folder("sources/member/deeper")
    assert not rules.may_make_folder("processed")


def test_an_upload_appears_only_when_committed(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    up = ws.open_write("data/a.csv", truncate=True, exclusive=False)
    Workspace.write(up, 0, b"id\n1\n")
    assert [name for name, _st in ws.list_folder("data")] == []  # the temp name is hidden
    done = ws.commit(up)
    assert (done.path, done.size) == ("data/a.csv", 5)
    assert [name for name, _st in ws.list_folder("data")] == ["a.csv"]
    with pytest.raises(SFTPFileAlreadyExists):
        ws.open_write("data/a.csv", truncate=True, exclusive=True)


def test_a_discarded_upload_leaves_nothing(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    up = ws.open_write("data/b.csv", truncate=True, exclusive=False)
    Workspace.write(up, 0, b"partial")
    ws.discard(up)
    assert list((tmp_path / "acct" / "data").iterdir()) == []


def test_symlinks_planted_in_the_folder_are_not_followed(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("no")
    (tmp_path / "acct" / "data" / "link").symlink_to(outside)
    (tmp_path / "acct" / "data" / "file-link").symlink_to(outside / "secret.txt")
    for attempt in (
        lambda: ws.list_folder("data/link"),
        lambda: ws.open_read("data/link/secret.txt"),
        lambda: ws.open_read("data/file-link"),
    ):
        with pytest.raises(SFTPError):
            attempt()


def test_writes_outside_the_upload_area_are_refused(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    (tmp_path / "acct" / "processed").mkdir()
    for attempt in (
        lambda: ws.open_write("processed/x.csv", truncate=True, exclusive=False),
        lambda: ws.make_folder("data/sub"),
        lambda: ws.remove("processed/x.csv"),
    ):
        with pytest.raises(SFTPPermissionDenied):
            attempt()


def test_passwords_are_salted_scrypt_and_checked() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert stored != hash_password("correct horse battery")
    assert check_password("correct horse battery", stored)
    assert not check_password("wrong horse battery", stored)
    assert not check_password("anything at all", None)
