"""Signed report links: ``<base>/v1/reports/<id>?expires=<unix seconds>&signature=<hex>``.

The signature is HMAC-SHA256 over ``"<id>\\n<expires>"`` with a key derived for this purpose
from the service's secret keys (:meth:`~streams.control.secrets.SecretBox.derive_keys`): links
are signed with the newest key and accepted with any configured one, so a key rotation keeps
links working until the old key is removed. Whoever holds a link can download the file until it
expires (the link is the credential, as in an e-mail); the API answers 403 to a link whose
signature or expiry is missing, malformed, wrong or past, before it looks the report up, so ids
cannot be probed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Sequence
from urllib.parse import urlencode

from streams.control.secrets import SecretBox

PURPOSE = "callstream report links v1"
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
_EXPIRES = re.compile(r"^[0-9]{1,12}$")


class LinkError(Exception):
    """The link does not grant access (403); the message says why, safe to show."""


class LinkSigner:
    """Signs and checks report links (see the module doc)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = list(keys)

    @classmethod
    def from_secrets(cls, box: SecretBox) -> LinkSigner:
        """Use the keys derived from the service's secret keys."""
        return cls(box.derive_keys(PURPOSE))

    def _sign(self, key: bytes, report_id: str, expires: int) -> str:
        message = f"{report_id}\n{expires}".encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def url(self, base_url: str, report_id: str, expires_at: dt.datetime) -> str:
        """The download link of ``report_id``, valid until ``expires_at`` (whole seconds)."""
        expires = int(expires_at.timestamp())
        query = urlencode(
            {"expires": expires, "signature": self._sign(self._keys[0], report_id, expires)}
        )
        return f"{base_url.rstrip('/')}/v1/reports/{report_id}?{query}"

    def verify(
        self, report_id: str, expires: str | None, signature: str | None, now: dt.datetime
    ) -> None:
        """Raise :class:`LinkError` unless the link is genuine and ``now`` is before its
        expiry."""
        if not expires or not signature:
            raise LinkError("the link has no signature or expiry: use the link as it was sent")
        if not _EXPIRES.match(expires) or not _SIGNATURE.match(signature):
            raise LinkError("the link's signature is not valid")
        stamp = int(expires)
        genuine = False
        for key in self._keys:  # every key, always: the time taken tells nothing
            genuine |= hmac.compare_digest(self._sign(key, report_id, stamp), signature)
        if not genuine:
            raise LinkError("the link's signature is not valid")
        if now.timestamp() >= stamp:
            raise LinkError("the link has expired")
