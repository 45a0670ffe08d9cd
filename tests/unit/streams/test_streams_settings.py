"""load_settings: YAML file, CALLSTREAM_* environment, defaults, and readable errors."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

from connectors.local import LocalConfig
from connectors.poller import CleanupPolicy
from connectors.sftp import SftpConfig
from streams.codec import DEFAULT_SCHEMAS_DIR
from streams.errors import ConfigError
from streams.settings import Settings, load_settings

HOST_KEY = "SHA256:7Kx0mI6n0Jc9bZ4x0YpJ2b2w7pQ4o0n1m6Yl7b3d5ZQ"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CALLSTREAM_* variable from the outer environment leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("CALLSTREAM_"):
            monkeypatch.delenv(name)


def yaml_file(tmp_path: Path, text: str, name: str = "callstream.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return info.value.problems


# -- errors name the field ----------------------------------------------------------------------


def test_problems_name_the_field_paths(tmp_path: Path) -> None:
    path = yaml_file(
        tmp_path,
        f"""
        tenants:
          - id: Acme Corp
            connectors:
              - name: daily
                store:
                  type: sftp
                  host: sftp.example.com
                  username: acme
                  host_key: "{HOST_KEY}"
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 2
    id_problem = next(p for p in problems if p.startswith("tenants.0.id: "))
    assert "pattern" in id_problem
    store_problem = next(p for p in problems if p.startswith("tenants.0.connectors.0.store"))
    assert "set exactly one of password, private_key or private_key_path" in store_problem


def test_config_error_message_lists_every_problem(tmp_path: Path) -> None:
    path = yaml_file(tmp_path, "http:\n  port: 99999\nlog_level: LOUD\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert text.startswith("invalid configuration:")
    assert "http.port" in text
    assert "log_level" in text


def test_unknown_keys_are_refused_by_name(tmp_path: Path) -> None:
    path = yaml_file(tmp_path, "kafak:\n  bootstrap_servers: k:9092\nkafka:\n  topic_prefx: x\n")
    problems = problems_of(path)
    assert any(p.startswith("kafak: ") for p in problems)
    assert any(p.startswith("kafka.topic_prefx: ") for p in problems)


def test_duplicate_tenant_ids_are_refused(tmp_path: Path) -> None:
    path = yaml_file(
        tmp_path,
        """
        tenants:
          - id: acme
          - id: globex
          - id: acme
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 1
    assert "duplicate tenant id(s): acme" in problems[0]


def test_duplicate_connector_names_within_a_tenant_are_refused(tmp_path: Path) -> None:
    path = yaml_file(
        tmp_path,
        """
        tenants:
          - id: acme
            connectors:
              - name: in
                store: {type: local, root: /srv/a}
          - id: globex
            connectors:
              - name: in
                store: {type: local, root: /srv/b}
              - name: in
                store: {type: local, root: /srv/c}
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith("tenants.1: ")
    assert "duplicate connector name(s): in" in problems[0]


def test_the_same_connector_name_in_two_tenants_is_fine(tmp_path: Path) -> None:
    path = yaml_file(
        tmp_path,
        """
        tenants:
          - id: acme
            connectors: [{name: in, store: {type: local, root: /srv/a}}]
          - id: globex
            connectors: [{name: in, store: {type: local, root: /srv/b}}]
        """,
    )
    settings = load_settings(path)
    assert [(t.id, t.connectors[0].name) for t in settings.tenants] == [
        ("acme", "in"),
        ("globex", "in"),
    ]


def test_config_errors_do_not_echo_secrets(tmp_path: Path) -> None:
    path = yaml_file(
        tmp_path,
        f"""
        tenants:
          - id: acme
            connectors:
              - name: daily
                store:
                  type: sftp
                  host: sftp.example.com
                  username: acme
                  password: s3cret-Passw0rd
                  private_key: "-----BEGIN OPENSSH PRIVATE KEY----- very-secret-key"
                  host_key: "{HOST_KEY}"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert "tenants.0.connectors.0.store" in text
    assert "s3cret-Passw0rd" not in text
    assert "very-secret-key" not in text


def test_a_processed_dir_outside_the_root_is_a_config_error(tmp_path: Path) -> None:
    path = yaml_file(
        tmp_path,
        """
        tenants:
          - id: acme
            connectors:
              - name: in
                store: {type: local, root: /srv/in}
                poll: {cleanup: move, processed_dir: ../done}
        """,
    )
    problems = problems_of(path)
    assert any(p.startswith("tenants.0.connectors.0.poll.processed_dir") for p in problems)


# -- the file -----------------------------------------------------------------------------------


def test_a_missing_config_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "callstream.yaml"
    problems = problems_of(path)
    assert problems == [f"config file {str(path)!r}: not found"]


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    problems = problems_of(tmp_path)
    assert str(tmp_path) in problems[0]


def test_python_tags_are_refused_and_never_executed(tmp_path: Path) -> None:
    witness = tmp_path / "pwned"
    path = yaml_file(
        tmp_path,
        f"""
        data_dir: !!python/object/apply:os.system ["touch {witness}"]
        log_level: !!python/object:os.getcwd {{}}
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 1
    assert str(path) in problems[0]
    assert "python/object" in problems[0]
    assert not witness.exists()


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_the_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    problems = problems_of(yaml_file(tmp_path, text))
    assert problems == [
        f"config file {str(tmp_path / 'callstream.yaml')!r}: top level must be a mapping"
    ]


def test_invalid_yaml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = yaml_file(tmp_path, "kafka: [unclosed\n")
    problems = problems_of(path)
    assert str(path) in problems[0]


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    settings = load_settings(yaml_file(tmp_path, ""))
    assert settings.tenants == []
    assert settings.kafka.bootstrap_servers is None


def test_a_full_file_is_loaded(tmp_path: Path) -> None:
    path = yaml_file(
        tmp_path,
        f"""
        data_dir: {tmp_path}/state
        log_format: json
        kafka:
          bootstrap_servers: kafka-1:9092,kafka-2:9092
          client_config: {{security.protocol: SSL}}
        tenants:
          - id: acme
            connectors:
              - name: sftp-daily
                store:
                  type: sftp
                  host: sftp.example.com
                  username: acme
                  password: pw
                  host_key: "{HOST_KEY}"
                  root: /upload
                poll:
                  include: ["*.csv", "recordings/**/*.wav"]
                  done_marker_suffix: .done
                  cleanup: move
              - name: local-drop
                enabled: false
                store: {{type: local, root: {tmp_path}/drop}}
        """,
    )
    s = load_settings(path)
    assert s.data_dir == tmp_path / "state"
    assert s.log_format == "json"
    assert s.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert s.kafka.client_config == {"security.protocol": "SSL"}
    sftp, local = s.tenants[0].connectors
    assert isinstance(sftp.store, SftpConfig)
    assert sftp.store.root == "/upload"
    assert sftp.poll.include == ("*.csv", "recordings/**/*.wav")
    assert sftp.poll.done_marker_suffix == ".done"
    assert sftp.poll.cleanup is CleanupPolicy.MOVE
    assert isinstance(local.store, LocalConfig)
    assert local.store.root == tmp_path / "drop"
    assert local.enabled is False
    assert s.demo_enabled is False


# -- the environment ----------------------------------------------------------------------------


def test_env_var_overrides_the_file_and_keeps_its_other_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = yaml_file(
        tmp_path,
        """
        kafka:
          bootstrap_servers: from-file:9092
          topic_prefix: acme-prod
        """,
    )
    monkeypatch.setenv("CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS", "from-env:9092")
    s = load_settings(path)
    assert s.kafka.bootstrap_servers == "from-env:9092"
    assert s.kafka.topic_prefix == "acme-prod"


def test_env_vars_work_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS", "k:9092")
    monkeypatch.setenv("CALLSTREAM_HTTP__PORT", "9100")
    monkeypatch.setenv("CALLSTREAM_LOG_LEVEL", "DEBUG")
    s = load_settings()
    assert (s.kafka.bootstrap_servers, s.http.port, s.log_level) == ("k:9092", 9100, "DEBUG")


def test_a_bad_env_var_is_a_config_error_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSTREAM_HTTP__PORT", "eighty")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert any(p.startswith("http.port: ") for p in info.value.problems)


def test_callstream_config_env_var_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = yaml_file(tmp_path, "kafka:\n  topic_prefix: via-env\n")
    monkeypatch.setenv("CALLSTREAM_CONFIG", str(path))
    assert load_settings().kafka.topic_prefix == "via-env"


def test_callstream_config_pointing_nowhere_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLSTREAM_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=re.escape("missing.yaml")):
        load_settings()


def test_overrides_win_over_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = yaml_file(tmp_path, "log_level: WARNING\n")
    monkeypatch.setenv("CALLSTREAM_LOG_LEVEL", "ERROR")
    assert load_settings(path, log_level="DEBUG").log_level == "DEBUG"


def test_the_file_is_not_used_by_a_later_load(tmp_path: Path) -> None:
    load_settings(yaml_file(tmp_path, "kafka:\n  topic_prefix: first\n"))
    assert load_settings().kafka.topic_prefix == "callstream"
    assert Settings.config_file is None


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.log_level = "DEBUG"  # type: ignore[misc]


# -- defaults -----------------------------------------------------------------------------------


def test_defaults_are_the_embedded_local_stack() -> None:
    s = load_settings()
    assert s.kafka.bootstrap_servers is None
    assert s.database.url is None
    assert s.database_url == f"sqlite+aiosqlite:///{Path('var') / 'callstream.db'}"
    assert s.schemas_dir == DEFAULT_SCHEMAS_DIR
    assert s.tenants == []
    assert s.demo_enabled is True


def test_database_url_is_sqlite_under_data_dir(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path / "state")
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path}/state/callstream.db"


def test_a_configured_database_url_is_used_as_is(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://callstream:secret@db:5432/callstream"
    path = yaml_file(tmp_path, f"database:\n  url: {url}\n")
    assert load_settings(path).database_url == url


@pytest.mark.parametrize(
    ("demo", "tenants", "expected"),
    [
        (None, [], True),
        (None, [{"id": "acme"}], False),
        (False, [], False),
        (True, [{"id": "acme"}], True),
    ],
)
def test_demo_is_enabled_only_without_tenants_unless_set(
    demo: bool | None, tenants: list[dict[str, str]], expected: bool
) -> None:
    overrides: dict[str, object] = {"tenants": tenants}
    if demo is not None:
        overrides["demo"] = demo
    assert load_settings(**overrides).demo_enabled is expected
