"""Errors of control-plane operations; the API answers them as problem details.

::

    ControlError
     ├── NotFoundError    no such resource in the caller's tenant (404)
     └── ConflictError    the change contradicts the current state (409)
"""

from __future__ import annotations


class ControlError(Exception):
    """Base of control-plane operation errors; the message is safe to show to the caller."""


class NotFoundError(ControlError):
    """No such resource in the caller's tenant (another tenant's resource is not found too)."""


class ConflictError(ControlError):
    """The change contradicts the current state: duplicate name, third active key, ...

    ``field``: the request field that cannot be changed, when one is to blame (the API lists it
    in the problem's ``errors``)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
