"""Mail through a real SMTP server (aiosmtpd): STARTTLS, AUTH, and each failing step named."""

from __future__ import annotations

import pytest
from fixtures import mail_settings
from servers.smtp import SmtpServer

from streams import mail
from streams.settings import MailSettings


async def test_a_message_goes_through_starttls_and_login(smtp_server: SmtpServer) -> None:
    settings = MailSettings.model_validate(mail_settings(smtp_server))
    msg = mail.compose(settings, ["ops@example.com"], "hello", "body text")
    await mail.send(settings, msg)
    got = smtp_server.wait_for(lambda m: m["Subject"] == "hello")
    assert got[0]["From"] == "callstream@example.com"
    assert got[0]["X-Envelope-To"] == "ops@example.com"
    assert got[0].get_content().strip() == "body text"


@pytest.mark.parametrize(
    ("overrides", "step"),
    [
        ({"password": "wrong"}, "auth"),
        ({"ca_file": None}, "starttls"),  # self-signed: not trusted by the system store
        ({"port": 1}, "connect"),
        ({"host": None}, "connect"),
    ],
)
async def test_each_failing_step_is_named(
    smtp_server: SmtpServer, overrides: dict[str, object], step: str
) -> None:
    settings = MailSettings.model_validate(mail_settings(smtp_server, **overrides))
    with pytest.raises(mail.MailError) as err:
        await mail.send(settings, mail.compose(settings, ["ops@example.com"], "x", "y"))
    assert err.value.step == step
    assert "wrong" not in str(err.value)
