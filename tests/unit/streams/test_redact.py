"""The redactor: card numbers (digits and spoken), e-mails, phone numbers; redact, hash, keep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from streams.codec import AvroCodec
from streams.deadletters import DeadLetters
from streams.media import LocalMediaStore
from streams.metrics import Metrics
from streams.redact import RedactionSettings, Redactor, Redactors, luhn_valid
from streams.topics import Topics

REDACT = Redactor(RedactionSettings())


def redact(text: str) -> tuple[str, dict[str, int]]:
    return REDACT.redact_text(text)


@pytest.mark.parametrize(
    "card",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "3782 822463 10005",  # Amex, 15 digits in 4-6-5 groups
        "6011000990139424",
        "4222222222222",  # 13 digits
    ],
)
def test_luhn_valid_card_runs_are_redacted(card: str) -> None:
    assert redact(f"my card is {card}, thanks") == ("my card is [CARD], thanks", {"card": 1})


@pytest.mark.parametrize(
    "digits",
    [
        "4111111111111112",  # Luhn fails
        "4111 1111 1111 1112",
        "411111111111",  # 12 digits: too short
        "41111111111111111111",  # 20 digits, no valid 13-19 digit part of whole groups
    ],
)
def test_other_digit_runs_are_kept(digits: str) -> None:
    assert redact(f"order {digits} shipped") == (f"order {digits} shipped", {})


def test_a_card_inside_a_longer_grouped_run_is_found() -> None:
    text, counts = redact("ref 12 4111 1111 1111 1111 end")
    assert text == "ref 12 [CARD] end"
    assert counts == {"card": 1}


def test_luhn() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


@pytest.mark.parametrize(
    "spoken",
    [
        "four one one one one one one one one one one one one one one one",
        "four one one one, one one one one, one one one one, one one one one",
        "Four-one-one-one one one one one one one one one one one one one",
        "six oh one one zero zero zero nine nine oh one three nine four two four",
    ],
)
def test_spoken_card_numbers_are_redacted(spoken: str) -> None:
    text, counts = redact(f"sure, it is {spoken}. anything else?")
    assert text == "sure, it is [CARD]. anything else?"
    assert counts == {"card": 1}


def test_spoken_digits_that_are_not_a_card_are_kept() -> None:
    for text in (
        "four one one one one one one one one one one one one one one two",  # Luhn fails
        "I have one dog and two cats",
        "nine four one oh five",  # a ZIP code
    ):
        assert redact(text) == (text, {})


@pytest.mark.parametrize(
    "email", ["jane.doe@example.com", "J.Doe+billing@mail.example.co.uk", "a_b-c@sub-domain.org"]
)
def test_emails_are_redacted(email: str) -> None:
    assert redact(f"write to {email}.") == ("write to [EMAIL].", {"email": 1})


@pytest.mark.parametrize(
    "phone",
    [
        "+1 415 555 0132",
        "(415) 555-0132",
        "415-555-0132",
        "415.555.0132",
        "+44 20 7946 0958",
        "+49 30 901820",
    ],
)
def test_phone_numbers_are_redacted(phone: str) -> None:
    assert redact(f"call me on {phone} today") == ("call me on [PHONE] today", {"phone": 1})


def test_default_region_reads_national_numbers() -> None:
    uk = Redactor(RedactionSettings(default_region="gb"))
    assert uk.redact_text("ring 020 7946 0958") == ("ring [PHONE]", {"phone": 1})
    assert REDACT.redact_text("ring 020 7946 0958")[1] == {}  # not a valid US number


def test_unknown_region_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown phone region"):
        RedactionSettings(default_region="XX")


def test_all_kinds_counted_and_redacting_again_changes_nothing() -> None:
    text = "card 4111 1111 1111 1111, mail jane.doe@example.com, phone +1 415 555 0132"
    once, counts = redact(text)
    assert once == "card [CARD], mail [EMAIL], phone [PHONE]"
    assert counts == {"card": 1, "email": 1, "phone": 1}
    assert redact(once) == (once, {})


def test_a_card_is_not_taken_for_a_phone_number() -> None:
    assert redact("5555555555554444") == ("[CARD]", {"card": 1})


def _hash(key: bytes) -> Redactor:
    return Redactor(RedactionSettings(policy="hash"), key)


def test_hash_policy_is_stable_per_tenant_and_differs_across_tenants() -> None:
    acme = Redactors(
        {"acme": RedactionSettings(policy="hash"), "globex": RedactionSettings(policy="hash")},
        lambda purpose: purpose.encode().ljust(32, b"\0"),
    )
    a, counts = acme.for_tenant("acme").redact_text("4111 1111 1111 1111 or 4111111111111111")
    assert counts == {"card": 2}
    first, second = a.split(" or ")
    assert first == second and first.startswith("[CARD:") and len(first) == len("[CARD:]") + 12
    g, _ = acme.for_tenant("globex").redact_text("4111111111111111")
    assert g != first and g.startswith("[CARD:")
    again, counts = acme.for_tenant("acme").redact_text(a)
    assert (again, counts) == (a, {})
    # the same e-mail and phone number written differently hash alike
    e1, _ = _hash(b"k" * 32).redact_text("Jane.Doe@Example.com")
    e2, _ = _hash(b"k" * 32).redact_text("jane.doe@example.com")
    p1, _ = _hash(b"k" * 32).redact_text("+1 415 555 0132")
    p2, _ = _hash(b"k" * 32).redact_text("(415) 555-0132")
    assert e1 == e2 and e1.startswith("[EMAIL:")
    assert p1 == p2 and p1.startswith("[PHONE:")
    assert "4111" not in a and "jane" not in e1


def test_hash_policy_needs_a_key() -> None:
    with pytest.raises(ValueError, match="needs a key"):
        Redactor(RedactionSettings(policy="hash"))


def test_keep_policy_changes_nothing() -> None:
    keep = Redactor(RedactionSettings(policy="keep"))
    text = "card 4111 1111 1111 1111, mail jane.doe@example.com, phone +1 415 555 0132"
    assert keep.redact_text(text) == (text, {})


def test_redact_conversation_counts_every_turn_and_adds_to_earlier_counts() -> None:
    redactors = Redactors({"keepco": RedactionSettings(policy="keep")}, lambda p: b"k" * 32)
    conv = {
        "tenant": "acme",
        "turns": [
            {"speaker": "customer", "text": "card 4111111111111111 and jane.doe@example.com"},
            {"speaker": "agent", "text": "and your phone, +1 415 555 0132?"},
        ],
        "redactions": {"card": 2},
    }
    redactors.redact_conversation(conv)
    assert [t["text"] for t in conv["turns"]] == [
        "card [CARD] and [EMAIL]",
        "and your phone, [PHONE]?",
    ]
    assert conv["redactions"] == {"card": 3, "email": 1, "phone": 1}
    kept = {"tenant": "keepco", "turns": [{"speaker": "agent", "text": "4111111111111111"}]}
    redactors.redact_conversation(kept)
    assert kept["turns"][0]["text"] == "4111111111111111" and kept["redactions"] == {}


TEXT = "card 4111 1111 1111 1111, mail jane.doe@example.com"


def test_api_tenants_get_their_stored_settings_and_config_tenants_keep_the_config_files() -> None:
    derived: list[str] = []

    def derive(purpose: str) -> bytes:
        derived.append(purpose)
        return purpose.encode().ljust(32, b"\0")

    redactors = Redactors({"acme": RedactionSettings(policy="keep")}, derive)
    assert redactors.for_tenant("api-co").redact_text(TEXT)[0] == "card [CARD], mail [EMAIL]"
    generation = redactors.generation
    redactors.use("api-co", RedactionSettings(policy="hash"))
    redactors.use("acme", RedactionSettings(policy="hash"))  # the config file's wins
    assert redactors.generation == generation + 2
    hashed, counts = redactors.for_tenant("api-co").redact_text(TEXT)
    assert hashed.startswith("card [CARD:") and counts == {"card": 1, "email": 1}
    assert derived == ["redaction:api-co"]  # the tenant's own key, derived once
    assert redactors.for_tenant("api-co").redact_text(TEXT)[0] == hashed
    assert derived == ["redaction:api-co"]
    assert redactors.for_tenant("acme").redact_text(TEXT) == (TEXT, {})
    assert redactors.configured("acme") == RedactionSettings(policy="keep")
    assert redactors.configured("api-co") is None
    redactors.use("api-co", RedactionSettings(policy="keep"))
    assert redactors.for_tenant("api-co").redact_text(TEXT) == (TEXT, {})
    redactors.use("api-co", None)  # unset: the default again
    assert redactors.settings_for("api-co") == RedactionSettings()


def test_a_reload_replaces_the_stored_set_unless_a_change_came_after_it_was_read() -> None:
    redactors = Redactors({}, lambda p: b"k" * 32)
    hashing = RedactionSettings(policy="hash")
    assert redactors.use_stored({"a": hashing, "b": hashing}, redactors.generation)
    a_before = redactors.for_tenant("a")
    b_before = redactors.for_tenant("b")
    assert a_before.settings.policy == "hash"
    # "b" changed in another process: "a" keeps its redactor, "b" gets a new one
    assert redactors.use_stored({"a": hashing, "b": RedactionSettings(policy="keep")}, 0)
    assert redactors.for_tenant("a") is a_before
    assert redactors.for_tenant("b") is not b_before
    assert redactors.settings_for("b").policy == "keep"
    # a reload read before this process's own change would undo it: refused, the next applies
    read_at = redactors.generation
    redactors.use("c", RedactionSettings(policy="keep"))
    assert not redactors.use_stored({"a": hashing}, read_at)
    assert redactors.settings_for("c").policy == "keep"
    assert redactors.use_stored({"a": hashing}, redactors.generation)
    assert redactors.settings_for("c") == redactors.settings_for("b") == RedactionSettings()


def _letter(redactors: Redactors | None, tmp_path: Path, raw: bytes, stage: str) -> dict[str, Any]:
    dead = DeadLetters(
        AvroCodec(), Topics("t"), Metrics(), LocalMediaStore(tmp_path), 1_000_000, redactors
    )
    _topic, _key, value = dead.build(
        tenant="acme",
        connector="drop",
        file_id="f1",
        path="a.csv",
        reason="bad_timestamp",
        message=f"row {raw.decode()!r} is bad",
        stage=stage,
        row=2,
        excerpt=raw.decode(),
        raw=raw,
    )
    letter: dict[str, Any] = AvroCodec().decode("callstream.DeadLetter", value)
    return letter


def test_a_dead_row_with_sensitive_values_keeps_raw_in_the_media_store_only(
    tmp_path: Path,
) -> None:
    redactors = Redactors({"acme": RedactionSettings()}, lambda p: b"k" * 32)
    raw = b"C-1,yesterday,card 4111 1111 1111 1111\n"
    letter = _letter(redactors, tmp_path, raw, "validate")
    assert letter["raw"] is None and letter["raw_size"] == len(raw)
    assert LocalMediaStore(tmp_path).get_bytes(letter["raw_ref"], 1000) == raw  # replay reads it
    assert letter["excerpt"] == "C-1,yesterday,card [CARD]\n"
    assert "4111" not in letter["message"] and "[CARD]" in letter["message"]
    # nothing sensitive, or the tenant keeps values, or no redactors: raw stays inline
    plain = b"C-2,yesterday,no card\n"
    assert _letter(redactors, tmp_path, plain, "validate")["raw"] == plain
    keep = Redactors({"acme": RedactionSettings(policy="keep")}, lambda p: b"k" * 32)
    assert _letter(keep, tmp_path, raw, "validate")["raw"] == raw
    assert _letter(None, tmp_path, raw, "validate")["raw"] == raw
