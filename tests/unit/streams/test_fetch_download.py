"""The fetch's SSRF checks without a network: the resolver is the guard, IP literals are
checked before aiohttp sees them (it never resolves those)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from connectors.errors import AddressRefused
from connectors.netguard import AddressGuard
from streams.fetch.download import Downloader, GuardResolver
from streams.media import LocalMediaStore


def _answers(*addresses: str) -> Any:
    def getaddrinfo(host: str, port: int, *_args: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    return getaddrinfo


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    resolver = GuardResolver(AddressGuard(getaddrinfo=_answers("93.184.216.34", "10.0.0.5")))
    with pytest.raises(AddressRefused, match="private"):
        await resolver.resolve("rebind.example", 443)


async def test_the_resolver_answers_checked_addresses_for_the_name() -> None:
    resolver = GuardResolver(AddressGuard(["127.0.0.1"], getaddrinfo=_answers("127.0.0.1")))
    [answer] = await resolver.resolve("recordings.test", 8080)
    assert answer["host"] == "127.0.0.1" and answer["hostname"] == "recordings.test"
    assert answer["port"] == 8080


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/a.wav",
        "http://[::ffff:10.0.0.1]/a.wav",
        "http://127.0.0.2/a.wav",
    ],
)
def test_ip_literals_are_checked_against_the_allow_list(url: str, tmp_path: Any) -> None:
    downloader = Downloader(AddressGuard(["127.0.0.1"]), LocalMediaStore(tmp_path))
    with pytest.raises(AddressRefused):
        downloader._check_literal(url)
    downloader._check_literal("http://127.0.0.1:9/a.wav")  # allowed: no error
    downloader._check_literal("http://recordings.test/a.wav")  # a name: the resolver's job
