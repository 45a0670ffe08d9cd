"""Store types by name: the one place that knows every file store.

``streams`` builds a connector's store with :func:`open_store` and never imports a store class.
A new kind of store is a module in this package (a config model whose ``type`` field is a
``Literal`` of its name, and a class with the :class:`~connectors.base.FileStore` methods), one
entry in :data:`STORE_TYPES`, and its config model in the ``StoreConfig`` union of
``streams.settings`` (pydantic needs that union spelled out to validate configuration files).

Connectors created through the API are built with an :class:`~connectors.netguard.AddressGuard`
(the SSRF policy); connectors from the configuration file without one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from connectors.base import FileStore
from connectors.local import LocalConfig, LocalStore
from connectors.netguard import AddressGuard
from connectors.s3 import S3Config, S3Store
from connectors.sftp import SftpConfig, SftpStore


@dataclass(frozen=True, slots=True)
class StoreType:
    """A kind of file store: its configuration model and how to build one from it (and the
    address guard, which stores that open no network connection ignore)."""

    name: str
    config: type[BaseModel]
    build: Callable[[Any, AddressGuard | None], FileStore]


def _local_store(config: LocalConfig, guard: AddressGuard | None) -> LocalStore:
    return LocalStore(config)  # a folder on this machine: no network address to check


STORE_TYPES: Mapping[str, StoreType] = {
    t.name: t
    for t in (
        StoreType("local", LocalConfig, _local_store),
        StoreType("sftp", SftpConfig, SftpStore),
        StoreType("s3", S3Config, S3Store),
    )
}
"""Every store type, by the value of its config's ``type`` field."""


def open_store(config: BaseModel, guard: AddressGuard | None = None) -> FileStore:
    """Build the (not yet connected) file store a connector's store configuration describes.

    With a ``guard``, the store connects only to addresses the guard allows (see
    :mod:`connectors.netguard`); without one, to wherever the configuration points.
    """
    name = getattr(config, "type", None)
    kind = STORE_TYPES.get(name) if isinstance(name, str) else None
    if kind is None or not isinstance(config, kind.config):
        known = ", ".join(sorted(STORE_TYPES))
        raise ValueError(f"unknown store type {name!r} ({type(config).__name__}); known: {known}")
    return kind.build(config, guard)
