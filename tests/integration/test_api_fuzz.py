"""Schemathesis fuzzes the live API from its own OpenAPI document: no 5xx, every answer conforms.

``callstream run`` runs as its own process (as in production) on the session's Kafka and
PostgreSQL. Schemathesis (every check: server errors, status codes, content types, response
schemas, negative data rejected, positive data accepted, unsupported methods, ...) runs in
three passes, so that fuzzing one credential never takes the next pass's away:

1. the operator token on the operator routes (``/v1/tenants...``);
2. a tenant's key on every tenant route except revocation (stateful links may chain a created
   key into a revoke; the key the pass runs with must stay valid);
3. a second key of that tenant on the revoke routes, without the stateful phase.

Figures (operations and test cases per pass) are printed; the test fails on any failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from api_support import OPERATOR_TOKEN
from servers.postgres import PostgresServer
from support import free_port, settings_for, start_service, wait_for_log, write_config

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MAX_EXAMPLES = 30


def _schemathesis(base: str, token: str, *args: str) -> tuple[int, str]:
    """Run the Schemathesis CLI against ``base``; return its exit code and output.

    A client killed by a signal (it died with SIGSEGV once in about five CI runs, in its
    fuzzing phase, while the service answered correctly) is run once more with the same seed;
    its first output, with the Python traceback faulthandler printed, stays in the output. A
    finding (exit 1) is never retried.
    """
    command = [
        SCHEMATHESIS,
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{base}/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "2",
        "--warnings",
        "off",
        "--seed",
        "20261123",
        *args,
    ]
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    earlier = ""
    for _attempt in range(2):
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=900, check=False, env=env
        )
        output = earlier + proc.stdout + proc.stderr
        if proc.returncode >= 0:
            break
        print(f"schemathesis died of signal {-proc.returncode}; its output:\n{output[-6000:]}")
        earlier = f"[a first run died of signal {-proc.returncode}]\n"
    return proc.returncode, output


def _figures(output: str) -> str:
    cases = re.search(r"(\d+) generated, .*", output)
    ops = re.search(r"Tested: (\d+)", output)
    return f"{ops.group(1) if ops else '?'} operations, {cases.group(0) if cases else '?'}"


def _failures(output: str) -> str:
    """The failure reports of a schemathesis run (they come before its summary)."""
    start = output.find("FAILURES")
    return output[start - 40 : start + 12_000] if start >= 0 else output[-6000:]


def _key(base: str, tenant: str, name: str, create: bool = False) -> str:
    """Create a key of ``tenant`` (first creating the tenant) through the operator API."""
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    if create:
        made = requests.post(
            f"{base}/v1/tenants", json={"id": tenant, "name": tenant}, headers=operator, timeout=30
        )
        assert made.status_code == 201, made.text
    reply = requests.post(
        f"{base}/v1/tenants/{tenant}/keys",
        json={"name": name},
        headers=operator,
        timeout=30,
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["key"])


def test_schemathesis_finds_no_server_error_and_no_nonconforming_answer(
    kafka: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    pg_server.reset()
    port = free_port()
    settings = settings_for(
        kafka,
        "apifuzz",
        tmp_path / "data",
        [],
        tenant="fuzz",
        database_url=pg_server.async_url(),
        http={"port": port},
        api={"operator_token": OPERATOR_TOKEN},
    )
    config = write_config(tmp_path / "callstream.yaml", settings)
    log = tmp_path / "service.log"
    service = start_service(config, log)
    try:
        wait_for_log(log, "callstream is running", timeout=120)
        base = f"http://127.0.0.1:{port}"
        results = []
        rc, out = _schemathesis(base, OPERATOR_TOKEN, "--include-path-regex", "^/v1/tenants")
        results.append(("operator routes", rc, out))
        # A tenant the operator pass cannot have touched: made after it.
        tenant_key = _key(base, "schemathesis", "schemathesis", create=True)
        revoke_key = _key(base, "schemathesis", "schemathesis revoke")
        rc, out = _schemathesis(
            base,
            tenant_key,
            "--exclude-path-regex",
            "^/v1/tenants|/revoke$",
        )
        results.append(("tenant routes", rc, out))
        rc, out = _schemathesis(
            base,
            revoke_key,
            "--include-path-regex",
            "^/v1/keys/.*/revoke$",
            "--phases",
            "examples,coverage,fuzzing",
        )
        results.append(("revoke routes", rc, out))
        print()
        for label, rc, out in results:
            print(f"schemathesis, {label}: {_figures(out)}, exit {rc}")
        failed = [(label, out) for label, rc, out in results if rc != 0]
        assert not failed, "\n\n".join(f"== {label}\n{_failures(out)}" for label, out in failed)
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-4000:]
    finally:
        service.terminate()
        try:
            service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            service.kill()
            pytest.fail("callstream did not stop within 60 s of SIGTERM")
