"""The callstream command: help everywhere, and config errors that name the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "streams"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)


def test_help_is_available_for_every_command() -> None:
    for args in ([], ["run"], ["check-config"], ["kafka"], ["kafka", "fetch"], ["kafka", "run"]):
        result = _run(*args, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage: callstream" in result.stdout


def test_check_config_names_each_bad_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        """
tenants:
  - id: Acme Corp
    connectors:
      - name: daily
        store: {type: sftp, host: sftp.example.com, username: acme, host_key: "SHA256:abc"}
        poll: {interval_seconds: -1}
"""
    )
    result = _run("--config", str(config), "check-config")
    assert result.returncode == 2
    assert "tenants.0.id" in result.stderr
    assert "tenants.0.connectors.0.store.sftp" in result.stderr
    assert "set exactly one of password, private_key or private_key_path" in result.stderr
    assert "tenants.0.connectors.0.poll.interval_seconds" in result.stderr


def test_check_config_accepts_a_valid_file_and_never_prints_secrets(tmp_path: Path) -> None:
    config = tmp_path / "ok.yaml"
    config.write_text(
        """
kafka: {bootstrap_servers: "kafka-1:9092"}
tenants:
  - id: acme
    connectors:
      - name: daily
        store:
          type: sftp
          host: sftp.example.com
          username: acme
          password: hunter2-very-secret
          host_key: "SHA256:7Kx0mI6n0Jc9bZ4x0YpJ2b2w7pQ4o0n1m6Yl7b3d5ZQ"
"""
    )
    result = _run("--config", str(config), "check-config")
    assert result.returncode == 0, result.stderr
    assert "connector acme/daily: sftp, enabled" in result.stdout
    shipped = len(list((Path(__file__).parents[2] / "avro").glob("*.avsc")))
    assert f"schemas: {shipped} valid" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


def test_check_config_rejects_unsafe_yaml(tmp_path: Path) -> None:
    config = tmp_path / "evil.yaml"
    config.write_text("data_dir: !!python/object/apply:os.system ['echo pwned']\n")
    result = _run("--config", str(config), "check-config")
    assert result.returncode == 2
    assert "pwned" not in result.stdout
    assert "config file" in result.stderr
