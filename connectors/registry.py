"""Store types by name: the one place that knows every file store.

``streams`` builds a connector's store with :func:`open_store` and never imports a store class.
A new kind of store is a module in this package (a config model whose ``type`` field is a
``Literal`` of its name, and a class with the :class:`~connectors.base.FileStore` methods), one
entry in :data:`STORE_TYPES`, and its config model in the ``StoreConfig`` union of
``streams.settings`` (pydantic needs that union spelled out to validate configuration files).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from connectors.base import FileStore
from connectors.local import LocalConfig, LocalStore
from connectors.s3 import S3Config, S3Store
from connectors.sftp import SftpConfig, SftpStore


@dataclass(frozen=True, slots=True)
class StoreType:
    """A kind of file store: its configuration model and how to build one from it."""

    name: str
    config: type[BaseModel]
    build: Callable[[Any], FileStore]


STORE_TYPES: Mapping[str, StoreType] = {
    t.name: t
    for t in (
        StoreType("local", LocalConfig, LocalStore),
        StoreType("sftp", SftpConfig, SftpStore),
        StoreType("s3", S3Config, S3Store),
    )
}
"""Every store type, by the value of its config's ``type`` field."""


def open_store(config: BaseModel) -> FileStore:
    """Build the (not yet connected) file store a connector's store configuration describes."""
    name = getattr(config, "type", None)
    kind = STORE_TYPES.get(name) if isinstance(name, str) else None
    if kind is None or not isinstance(config, kind.config):
        known = ", ".join(sorted(STORE_TYPES))
        raise ValueError(f"unknown store type {name!r} ({type(config).__name__}); known: {known}")
    return kind.build(config)
