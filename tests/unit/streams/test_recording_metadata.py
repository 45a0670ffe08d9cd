"""Recording metadata files: the four formats, flat fields only, and hostile input refused."""

from __future__ import annotations

import io

import pytest

from streams.ingest.metadata import MetadataLimits, read_metadata
from streams.ingest.parse import FileRejected

LIMITS = MetadataLimits()
EXPECTED = {"caller_id": "+14155550100", "disposition": "sale", "amount": "1200.5"}


def read(name: str, data: bytes, limits: MetadataLimits = LIMITS) -> dict[str, str]:
    return read_metadata(io.BytesIO(data), name, limits)


def reason(name: str, data: bytes, limits: MetadataLimits = LIMITS) -> str:
    with pytest.raises(FileRejected) as caught:
        read(name, data, limits)
    return caught.value.reason


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("m.json", b'{"caller_id": "+14155550100", "disposition": "sale", "amount": 1200.5}'),
        (
            "m.xml",
            b"<?xml version='1.0'?><call><caller_id>+14155550100</caller_id>"
            b"<disposition>sale</disposition><amount>1200.5</amount></call>",
        ),
        (
            "m.xml",
            b'<call><field name="caller_id">+14155550100</field><field name="disposition">sale'
            b'</field><field name="amount">1200.5</field></call>',
        ),
        ("m.csv", b"caller_id,disposition,amount\r\n+14155550100,sale,1200.5\r\n"),
        ("m.csv", b"\xef\xbb\xbfcaller_id;disposition;amount\n+14155550100;sale;1200.5"),
        ("m.yml", b"caller_id: '+14155550100'\ndisposition: sale\namount: 1200.5\n"),
        ("m.YAML", b"caller_id: '+14155550100'\ndisposition: sale\namount: 1200.5\n"),
    ],
)
def test_each_format_gives_the_same_flat_fields(name: str, data: bytes) -> None:
    assert read(name, data) == EXPECTED


def test_utf16_with_bom_and_scalars_become_text() -> None:
    data = '{"ok": true, "n": null, "x": 3, "name": "Zoë"}'.encode("utf-16")
    assert read("m.json", data) == {"ok": "true", "n": "", "x": "3", "name": "Zoë"}


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("m.json", b'{"contact": {"name": "Ann"}}'),
        ("m.json", b'{"tags": ["a", "b"]}'),
        ("m.xml", b"<call><contact><name>Ann</name></contact></call>"),
        ("m.yml", b"contact:\n  name: Ann\n"),
        ("m.yml", b"tags: [a, b]\n"),
        ("m.json", b"[" * 100_000 + b"]" * 100_000),
    ],
)
def test_nested_values_are_refused(name: str, data: bytes) -> None:
    assert reason(name, data) in {"nested_metadata", "invalid_metadata"}
    if not data.startswith(b"[["):
        assert reason(name, data) == "nested_metadata"


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<call><disposition>&lol4;</disposition></call>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE call [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<call><disposition>&secret;</disposition></call>"""


@pytest.mark.parametrize("data", [BOMB, XXE])
def test_xml_entities_and_dtds_are_never_expanded(data: bytes) -> None:
    assert reason("m.xml", data) == "unsafe_xml"


def test_yaml_alias_bomb_is_refused_and_tags_are_not_constructed() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        lines.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join(['*' + prev] * 9)}]")
    assert reason("m.yml", "\n".join(lines).encode()) == "unsafe_yaml"
    assert reason("m.yml", b"x: !!python/object/apply:os.system ['true']\n") == "invalid_metadata"


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("m.json", b'{"a": "1", "a": "2"}', "invalid_metadata"),
        ("m.json", b'"just text"', "invalid_metadata"),
        ("m.json", b"{not json", "invalid_metadata"),
        ("m.json", b'{"a": 1' + b"0" * 5000 + b"}", "invalid_metadata"),
        ("m.json", b'{"a": "\\u0000"}', "invalid_metadata"),
        ("m.json", b'{"": "x"}', "invalid_metadata"),
        ("m.json", b'{"a": "\xff"}', "invalid_metadata"),
        ("m.xml", b"<call><a>1</a>", "invalid_metadata"),
        ("m.csv", b"a,b\n1,2\n3,4\n", "invalid_metadata"),
        ("m.csv", b"a,b\n1\n", "invalid_metadata"),
        ("m.csv", b'a,b\n"1,2\n', "invalid_metadata"),
        ("m.csv", b"a,b\n", "invalid_metadata"),
        ("m.yml", b"- a\n- b\n", "invalid_metadata"),
        ("m.yml", b"a: [\n", "invalid_metadata"),
        ("m.txt", b"a=b", "unsupported_format"),
    ],
)
def test_bad_files_get_a_reason(name: str, data: bytes, code: str) -> None:
    assert reason(name, data) == code


def test_limits_on_size_fields_and_values() -> None:
    small = MetadataLimits(max_bytes=1024, max_fields=2, max_value_chars=5)
    assert reason("m.json", b'{"a": "' + b"x" * 2000 + b'"}', small) == "too_large"
    assert reason("m.json", b'{"a": "1", "b": "2", "c": "3"}', small) == "too_many_fields"
    assert reason("m.json", b'{"a": "123456"}', small) == "invalid_metadata"
    assert read("m.json", b'{"a": "12345"}', small) == {"a": "12345"}
