"""Tenant settings: IANA zones and notification addresses are validated with the field named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.control.tenants import TenantPatch


def test_a_known_zone_and_addresses_are_accepted() -> None:
    patch = TenantPatch.model_validate(
        {"timezone": "Asia/Kolkata", "notification_emails": ["ops@example.com"]}
    )
    assert patch.timezone == "Asia/Kolkata"
    assert patch.redaction is None  # left out: unchanged
    hashed = TenantPatch.model_validate({"redaction": {"policy": "hash"}}).redaction
    assert hashed is not None and hashed.model_fields_set == {"policy"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"notification_emails": ["nope"]}, "notification_emails"),
        ({"notification_emails": [f"u{i}@example.com" for i in range(21)]}, "notification_emails"),
        ({"redaction": {"policy": "scramble"}}, "redaction"),
        ({"redaction": {"default_region": "XX"}}, "redaction"),
        ({"redaction": {"policy": "hash", "salt": "x"}}, "redaction"),
    ],
)
def test_bad_settings_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        TenantPatch.model_validate(body)
    assert err.value.errors()[0]["loc"][0] == field
