"""Signed report links: tampering with any part, expiry, key rotation."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet

from streams.control.secrets import SecretBox
from streams.exports.links import LinkError, LinkSigner

NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
EXPIRES = NOW + dt.timedelta(days=7)
ID = "rpt_0123456789abcdef01234567"


def parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path.rsplit("/", 1)[1], query["expires"][0], query["signature"][0]


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([Fernet.generate_key().decode()])


def test_a_link_names_the_route_and_verifies_until_it_expires(box: SecretBox) -> None:
    signer = LinkSigner.from_secrets(box)
    url = signer.url("https://cs.example.com/", ID, EXPIRES)
    assert url.startswith(f"https://cs.example.com/v1/reports/{ID}?expires=")
    ident, expires, signature = parts(url)
    assert (ident, int(expires)) == (ID, int(EXPIRES.timestamp()))
    signer.verify(ident, expires, signature, NOW)
    signer.verify(ident, expires, signature, EXPIRES - dt.timedelta(seconds=1))
    with pytest.raises(LinkError, match="expired"):
        signer.verify(ident, expires, signature, EXPIRES)
    with pytest.raises(LinkError, match="expired"):
        signer.verify(ident, expires, signature, EXPIRES + dt.timedelta(seconds=1))


def _flip(hexdigits: str, i: int) -> str:
    return hexdigits[:i] + ("0" if hexdigits[i] != "0" else "1") + hexdigits[i + 1 :]


def test_tampering_with_any_part_is_refused(box: SecretBox) -> None:
    signer = LinkSigner.from_secrets(box)
    ident, expires, signature = parts(signer.url("http://h", ID, EXPIRES))
    later = str(int(expires) + 86400)
    for bad in (
        (ID[:-1] + "8", expires, signature),  # another report
        (ident, later, signature),  # a longer life
        (ident, expires, _flip(signature, 0)),
        (ident, expires, _flip(signature, 63)),
        (ident, expires, signature.upper()),
        (ident, expires, signature[:-1]),
        (ident, expires + "0", signature),
        (ident, " " + expires, signature),
        (ident, "-1", signature),
        (ident, expires, signature + "00"),
    ):
        with pytest.raises(LinkError, match="not valid"):
            signer.verify(*bad, NOW)
    for missing in ((ident, None, signature), (ident, expires, None), (ident, "", "")):
        with pytest.raises(LinkError, match="no signature"):
            signer.verify(*missing, NOW)


def test_another_service_key_does_not_verify_and_rotation_keeps_links(box: SecretBox) -> None:
    old_key = Fernet.generate_key().decode()
    old = LinkSigner.from_secrets(SecretBox([old_key]))
    ident, expires, signature = parts(old.url("http://h", ID, EXPIRES))
    with pytest.raises(LinkError):
        LinkSigner.from_secrets(box).verify(ident, expires, signature, NOW)
    rotated = SecretBox([Fernet.generate_key().decode(), old_key])
    LinkSigner.from_secrets(rotated).verify(ident, expires, signature, NOW)


def test_derived_keys_differ_by_purpose_and_from_the_fernet_key(box: SecretBox) -> None:
    (links,) = box.derive_keys("report links")
    (other,) = box.derive_keys("something else")
    assert len(links) == 32 and links != other
    assert box.derive_keys("report links") == [links]  # stable across calls and restarts
