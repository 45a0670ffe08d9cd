"""Text fields of control-plane requests: what every database stores and every log can print.

``Line`` (names) refuses every control character; ``Paragraph`` (descriptions) allows tab and
line breaks. Both refuse lone surrogates (valid in JSON, not encodable in UTF-8): PostgreSQL
and SQLite would otherwise refuse or mangle the value after validation said it was fine.
Combine with ``Field(max_length=...)`` at the use site.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from exc
    return value


Line = Annotated[
    str,
    StringConstraints(min_length=1, pattern=r"^[^\x00-\x1f\x7f]+$"),
    AfterValidator(_encodable),
]
"""One line of text, no control characters (names, labels)."""

Paragraph = Annotated[
    str,
    StringConstraints(pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"),
    AfterValidator(_encodable),
]
"""Text that may hold tabs and line breaks, no other control characters (descriptions)."""
