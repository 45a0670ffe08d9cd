"""Connector secrets encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256, from ``cryptography``).

Keys: ``api.secret_keys`` (newest first). The first key encrypts; every key decrypts, so a key
is rotated without downtime: put the new key first, restart, run
``callstream connectors re-encrypt`` (every stored secret is re-encrypted with the first key),
then remove the old key. With no key configured, one is generated once in
``data_dir/secret.key`` (mode 0600, written atomically, reused on every start); a deployment
with several workers or a throw-away data_dir must configure ``api.secret_keys`` instead.

What is encrypted: the values of every ``SecretStr`` field of a connector's configuration
(``store.password``, ``store.private_key``, ``store.private_key_passphrase``,
``store.secret_access_key``, ``store.session_token``), together, as one token per connector;
the rest of the configuration is stored as plain JSON so it can be listed and searched without
a key. :func:`split_secrets` and :func:`join_secrets` move between the two forms.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets as random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, SecretStr

KEY_FILE = "secret.key"


class SecretsError(Exception):
    """A stored secret cannot be decrypted with any configured key (a key was removed too soon)."""


class SecretBox:
    """Encrypts and decrypts connector secrets with a list of Fernet keys (first encrypts)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one Fernet key is needed")
        self._keys = tuple(keys)
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except ValueError as exc:
            raise ValueError(
                "api.secret_keys: each key must be 32 url-safe base64-encoded bytes "
                "(generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from exc

    @classmethod
    def from_settings(cls, keys: Sequence[SecretStr], data_dir: Path) -> SecretBox:
        """Use the configured keys, or the key in ``data_dir/secret.key`` (made on first use)."""
        if keys:
            return cls([k.get_secret_value() for k in keys])
        return cls([load_or_create_key(data_dir / KEY_FILE)])

    def encrypt(self, values: dict[str, str]) -> str:
        """Encrypt a ``{field path: secret}`` mapping into one token."""
        return self._fernet.encrypt(json.dumps(values, sort_keys=True).encode()).decode()

    def decrypt(self, token: str) -> dict[str, str]:
        """Decrypt a token made by :meth:`encrypt` with any of the keys."""
        try:
            data = self._fernet.decrypt(token.encode())
        except InvalidToken as exc:
            raise SecretsError(
                "a connector secret cannot be decrypted with any key in api.secret_keys "
                "(was the key that encrypted it removed before `callstream connectors "
                "re-encrypt` ran?)"
            ) from exc
        values: dict[str, str] = json.loads(data)
        return values

    def derive_keys(self, purpose: str) -> list[bytes]:
        """Return a 32-byte key for ``purpose`` (e.g. "report-links") per configured key, first
        key first (HKDF-SHA256): sign with the first, accept any, so rotation keeps working.
        A derived key reveals nothing about the Fernet key nor about another purpose's key."""
        return [
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
                base64.urlsafe_b64decode(key.encode())
            )
            for key in self._keys
        ]

    def rotate(self, token: str) -> str:
        """Re-encrypt a token with the first key (its content is unchanged)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretsError("a connector secret cannot be decrypted with any key") from exc


def load_or_create_key(path: Path) -> str:
    """Return the Fernet key in ``path``, creating it (mode 0600) if there is none.

    The key is written to a private temporary file and hard-linked into place, so concurrent
    starts agree on one key and no reader ever sees a partial file.
    """
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{random.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(Fernet.generate_key().decode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def split_secrets(model: BaseModel) -> tuple[dict[str, Any], dict[str, str]]:
    """Return (the model as JSON data without its secrets, ``{field path: secret value}``).

    Every ``SecretStr`` at any depth is taken out (its place holds ``None``); paths are dotted
    (``store.password``).
    """
    found: dict[str, str] = {}

    def walk(obj: Any, path: str) -> None:
        if isinstance(obj, SecretStr):
            found[path] = obj.get_secret_value()
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name), f"{path}.{name}" if path else name)

    walk(model, "")

    data = model.model_dump(mode="json")
    for dotted in found:
        _set(data, dotted, None)
    return data, found


def join_secrets(data: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """Put secret values back into JSON data at their dotted paths (a copy)."""
    out: dict[str, Any] = json.loads(json.dumps(data))
    for dotted, value in values.items():
        _set(out, dotted, value)
    return out


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
