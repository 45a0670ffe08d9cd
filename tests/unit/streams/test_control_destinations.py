"""Export connector models, their stored form, the mail text and the step runner (no network)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from connectors.probe import StepFailed, run_steps
from streams.control.destinations import (
    Destination,
    EmailConfig,
    ExportConnectorIn,
    ExportConnectorSettings,
    _stored_form,
    check,
)
from streams.control.secrets import SecretBox
from streams.exports.deliver import DeliveryLink, deliver, mail_text
from streams.settings import Settings

SFTP: dict[str, Any] = {
    "type": "sftp",
    "host": "sftp.example.com",
    "username": "acme",
    "password": "s3cret-pw",
    "host_key": "SHA256:" + "A" * 43,
    "root": "/exports",
}


def test_email_addresses_are_validated_bounded_and_deduplicated() -> None:
    config = EmailConfig(to=["qa@acme.example", "QA@acme.example", "ops@acme.example"])
    assert config.to == ["qa@acme.example", "ops@acme.example"]
    for bad in ([], [f"a{i}@acme.example" for i in range(21)], ["not-an-address"], ["a@b"]):
        with pytest.raises(ValidationError):
            EmailConfig(to=bad)


def test_config_type_picks_the_model_and_local_is_refused() -> None:
    made = ExportConnectorSettings.model_validate({"name": "out", "config": SFTP})
    assert made.config.type == "sftp" and made.enabled is True
    with pytest.raises(ValidationError) as err:
        ExportConnectorSettings.model_validate(
            {"name": "out", "config": {"type": "local", "root": "/tmp"}}
        )
    assert err.value.errors()[0]["loc"] == ("config",)
    with pytest.raises(ValidationError) as err:
        ExportConnectorSettings.model_validate({"name": "out", "config": {**SFTP, "port": 0}})
    assert err.value.errors()[0]["loc"] == ("config", "port")  # not config.sftp.port


def test_private_key_path_is_refused_and_a_keypair_is_generated() -> None:
    with_path = {**SFTP, "password": None, "private_key_path": "/etc/ssh/key"}
    made = ExportConnectorSettings.model_validate({"name": "out", "config": with_path})
    with pytest.raises(ValidationError) as err:
        check(made.config)
    assert err.value.errors()[0]["loc"] == ("config", "private_key_path")
    keyed = ExportConnectorIn.model_validate(
        {"name": "out", "config": {**SFTP, "password": None}, "generate_keypair": True}
    )
    assert keyed.config.type == "sftp" and keyed.config.private_key is not None
    with pytest.raises(ValidationError):
        ExportConnectorIn.model_validate(
            {"name": "out", "config": {"type": "email", "to": ["a@b.io"]}, "generate_keypair": True}
        )
    with pytest.raises(ValidationError):
        ExportConnectorIn.model_validate({"name": "out", "config": SFTP, "generate_keypair": True})


def test_stored_form_masks_secrets_and_encrypts_them_together() -> None:
    box = SecretBox([Fernet.generate_key().decode()])
    made = ExportConnectorSettings.model_validate({"name": "out", "config": SFTP})
    config, token, values = _stored_form(made, box)
    assert "s3cret-pw" not in config and json.loads(config)["password"] == "**********"
    assert token is not None and "s3cret-pw" not in token
    assert values == {"config.password": "s3cret-pw"} == box.decrypt(token)
    email = ExportConnectorSettings.model_validate(
        {"name": "m", "config": {"type": "email", "to": ["a@b.io"]}}
    )
    assert _stored_form(email, box)[1] is None


def test_mail_text_lists_every_link_with_rows_and_expiry() -> None:
    expires = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    text = mail_text(
        [
            DeliveryLink("a.csv", 1000, "https://cs.example/v1/reports/a?sig=1", expires),
            DeliveryLink("b.csv", 500, "https://cs.example/v1/reports/b?sig=2", expires),
        ]
    )
    assert "a.csv (1000 rows)" in text and "b.csv (500 rows)" in text
    assert "https://cs.example/v1/reports/b?sig=2" in text
    assert "2026-11-27 02:30 UTC" in text  # shown in UTC


async def test_a_disabled_destination_is_a_failed_delivery(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    destination = Destination("exp_1", "acme", "out", False, 1, EmailConfig(to=["a@b.io"]))
    outcome = await deliver(settings, destination, [], [], subject="x")
    assert outcome.ok is False and outcome.error is not None and "disabled" in outcome.error


def test_run_steps_reports_the_failing_step_scrubbed_and_skips_the_rest() -> None:
    def boom() -> tuple[str, dict[str, Any]]:
        raise StepFailed("refused with password hunter2", {"error": "auth", "why": "hunter2"})

    report = run_steps(
        "email",
        "smtp://relay:587",
        [("one", lambda: ("fine", {})), ("two", boom), ("three", lambda: ("never", {}))],
        ["hunter2"],
    )
    assert report.ok is False and report.failed_step == "two" and report.type == "email"
    assert [s.status for s in report.steps] == ["passed", "failed", "skipped"]
    assert "hunter2" not in report.model_dump_json()
