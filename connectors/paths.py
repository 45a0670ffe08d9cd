"""Connector-relative paths: one normal form, and no way out of the root.

Every path that crosses the store protocol is POSIX, relative to the connector's root, with no
empty, ``.`` or ``..`` component and no control character. :func:`normalize` enforces that for
names that come from configuration or from events; :func:`is_safe_name` screens single names
returned by a listing and :func:`is_safe_path` whole listed paths (which must also fit the state
table's ``path`` column, :data:`MAX_PATH_CHARS`).
"""

from __future__ import annotations

import posixpath
import re

from connectors.errors import UnsafePath

MAX_PATH_CHARS = 1024
"""Longest connector-relative path served: the width of ``connector_files.path``."""

#: C0 controls, DEL, and surrogates: a name that is not valid UTF-8 (decoded with
#: surrogateescape) could not be hashed, logged or stored as text.
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def has_control_character(text: str) -> bool:
    """Tell whether ``text`` has a C0 control character or DEL (newline included), or bytes
    that are not UTF-8."""
    return _CONTROL.search(text) is not None


def normalize(path: str) -> str:
    """Return ``path`` in normal form or raise :class:`UnsafePath`."""
    if not path or has_control_character(path):
        raise UnsafePath(f"empty path or control character in {path!r}")
    if path.startswith("/"):
        raise UnsafePath(f"absolute path {path!r}: paths are relative to the connector root")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise UnsafePath(f"path {path!r} leaves the connector root")
    return "/".join(parts)


def join(root: str, path: str) -> str:
    """Join a store root and a connector-relative path, refusing anything that escapes."""
    return posixpath.join(root, normalize(path)) if root else normalize(path)


def is_safe_name(name: str) -> bool:
    """Tell whether a single directory-entry name is safe to use as a path component.

    Refused: empty, ``.``, ``..``, a ``/``, and any C0 control character or DEL (a newline in a
    name would split log lines and Kafka keys; NUL cannot be stored in PostgreSQL text).
    """
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and not has_control_character(name)
    )


def is_safe_path(path: str) -> bool:
    """Tell whether a listed connector-relative path may be announced: safe names, short enough."""
    return len(path) <= MAX_PATH_CHARS and all(is_safe_name(p) for p in path.split("/"))


def unsafe_reason(path: str) -> str:
    """Say why :func:`is_safe_path` refuses ``path`` (for the skip detail)."""
    if len(path) > MAX_PATH_CHARS:
        return f"path longer than {MAX_PATH_CHARS} characters"
    return (
        "name contains a control character, '/', NUL or bytes that are not UTF-8, or is '.' or '..'"
    )


def parent(path: str) -> str:
    """Return the parent folder of a connector-relative path ('' for the root)."""
    return posixpath.dirname(path)
