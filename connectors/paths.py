"""Connector-relative paths: one normal form, and no way out of the root.

Every path that crosses the store protocol is POSIX, relative to the connector's root, with no
empty, ``.`` or ``..`` component. :func:`normalize` enforces that for names that come from
configuration or from events; :func:`is_safe_name` screens single names returned by a listing.
"""

from __future__ import annotations

import posixpath

from connectors.errors import UnsafePath


def normalize(path: str) -> str:
    """Return ``path`` in normal form or raise :class:`UnsafePath`."""
    if not path or "\x00" in path:
        raise UnsafePath(f"empty path or NUL byte in {path!r}")
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
    """Tell whether a single directory-entry name is safe to use as a path component."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\x00" not in name


def parent(path: str) -> str:
    """Return the parent folder of a connector-relative path ('' for the root)."""
    return posixpath.dirname(path)
