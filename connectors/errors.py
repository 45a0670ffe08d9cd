"""Errors raised by file stores and the poller.

::

    ConnectorError                  base; ``retriable`` says whether trying again may help
     ├── StoreUnavailable           network: refused, unreachable, timed out, session dropped
     │    └── StoreNotFound         the bucket the connector points at does not exist
     ├── AuthenticationFailed       the server rejected the credentials
     │    └── AccessDenied          the credentials are valid but may not do this
     ├── HostKeyMismatch            the server's host key is not the pinned one (or none is)
     ├── AddressRefused             the host resolves to an address the SSRF guard refuses
     ├── UnsafePath                 a name that would leave the connector's root
     ├── NotARegularFile            a symlink, FIFO, device or folder where a file was expected
     ├── FileVanished               the file went away (or changed) between listing and use
     ├── TargetExists               a move that must not replace found its target taken
     └── RequestRefused             the store refused one request for a reason of its own

The connector runner backs off and retries every ``ConnectorError``: credentials and host keys
get fixed by operators while the service keeps running. ``kind`` is a short, bounded label for
metrics.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error a file store raises."""

    retriable: bool = True
    kind: str = "io"


class StoreUnavailable(ConnectorError):
    """The store could not be reached or the session dropped."""

    kind = "network"


class StoreNotFound(StoreUnavailable):
    """The bucket the connector points at does not exist (yet): retried like a missing folder."""

    kind = "not_found"


class AuthenticationFailed(ConnectorError):
    """The store rejected the configured credentials."""

    retriable = False
    kind = "auth"


class AccessDenied(AuthenticationFailed):
    """The credentials are valid, but a policy does not allow this request (S3 AccessDenied)."""

    kind = "access_denied"


class HostKeyMismatch(ConnectorError):
    """The SFTP server presented a host key other than the pinned one, or none is pinned yet.

    ``fingerprint`` is the SHA256 fingerprint the server presented, ``public_key`` its OpenSSH
    key line when known (either can be pinned once checked with the server's operator).
    """

    retriable = False
    kind = "host_key"

    def __init__(self, message: str, *, fingerprint: str, public_key: str = "") -> None:
        super().__init__(message)
        self.fingerprint = fingerprint
        self.public_key = public_key


class AddressRefused(ConnectorError):
    """The host resolves to an address the SSRF guard refuses (loopback, private, link-local,
    multicast, ...) and the operator's allow-list does not cover it: no connection was made.
    See :mod:`connectors.netguard`."""

    retriable = False
    kind = "address_refused"

    def __init__(self, message: str, *, host: str, address: str, reason: str) -> None:
        super().__init__(message)
        self.host = host
        self.address = address
        self.reason = reason


class UnsafePath(ConnectorError):
    """A path is absolute, contains ``..`` or otherwise escapes the connector's root."""

    retriable = False
    kind = "unsafe_path"


class NotARegularFile(ConnectorError):
    """The path names a symlink, FIFO, device or folder instead of a regular file."""

    retriable = False
    kind = "not_regular"


class FileVanished(ConnectorError):
    """The file was removed, renamed or replaced by a new version between listing and use."""

    retriable = False
    kind = "vanished"


class TargetExists(ConnectorError):
    """A move with ``replace=False`` found something at the target path already."""

    retriable = False
    kind = "target_exists"


class RequestRefused(ConnectorError):
    """The store refused one request for a reason of its own (an S3 error code such as
    ``InvalidObjectState`` for an archived object): trying the same request again will not help."""

    retriable = False
    kind = "refused"
