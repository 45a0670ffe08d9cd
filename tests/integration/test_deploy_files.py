"""The deploy files are valid, checked by real validators (no Docker engine or cluster here):

* deploy/k8s: kubernetes-validate, strict, against the bundled Kubernetes schemas (latest and
  the oldest supported minor), plus what the schema cannot say (probes, roles, non-root,
  secrets only by reference, selectors that match, a ConfigMap callstream accepts);
* docker-compose.yml: the compose-spec JSON schema (vendored in deploy/schemas), the two
  workers, mounts that exist;
* deploy/Dockerfile: BuildKit's parser (the ``dockerfile`` package); the image builds the wheel
  and installs it with deploy/requirements.lock, which agrees with pyproject.toml's pins;
* deploy/prometheus: ``promtool check rules``, ``check config`` and ``test rules``; the
  dashboard's expressions parse as PromQL too (promtool checks them as recording rules).

Each validator is shown to reject a broken file, so a validator that checks nothing fails.
promtool comes from Debian's ``prometheus`` package (scripts/bootstrap.sh): missing, the test
fails.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_support import (
    ALERTS,
    DASHBOARD,
    REPO,
    alert_exprs,
    dashboard_exprs,
    metric_names,
    plain_promql,
)

from streams.settings import load_settings

K8S = REPO / "deploy" / "k8s"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_SCHEMA = REPO / "deploy" / "schemas" / "compose-spec.json"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
LOCK = REPO / "deploy" / "requirements.lock"
PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
K8S_VERSIONS = ("1.37", "1.30")


# -- Kubernetes ---------------------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    docs = [d for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    return [d for d in docs if d]


def _k8s_errors(doc: dict[str, Any], version: str) -> str | None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return str(exc)
    return None


def _one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _manifests() if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_strictly(version: str) -> None:
    docs = _manifests()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]
    for doc in docs:
        assert _k8s_errors(doc, version) is None, doc["kind"]


def test_the_k8s_validator_rejects_broken_manifests() -> None:
    deployment = _one("Deployment")
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "three"
    assert "replicas" in (_k8s_errors(wrong_type, K8S_VERSIONS[0]) or "")
    misspelt = copy.deepcopy(deployment)
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesytem"] = True
    assert "readOnlyRootFilesytem" in (_k8s_errors(misspelt, K8S_VERSIONS[0]) or "")
    no_selector = copy.deepcopy(_one("PodDisruptionBudget"))
    no_selector["spec"]["maxUnavailable"] = {"nested": 1}
    assert _k8s_errors(no_selector, K8S_VERSIONS[0]) is not None


def test_the_deployment_runs_every_role_safely() -> None:
    deployment = _one("Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] >= 2
    args = container["args"]
    assert args[args.index("--roles") + 1] == "connectors,processors,api"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["terminationGracePeriodSeconds"] > 30  # shutdown_grace_seconds
    for env in container["env"]:  # secrets only by reference
        assert "value" not in env and "secretKeyRef" in env["valueFrom"], env["name"]
    secret = _one("Secret")
    assert all(v == "" for v in secret["stringData"].values()), "no secret values committed"
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]}
    assert refs == set(secret["stringData"])
    labels = spec["template"]["metadata"]["labels"]
    for selector in (
        spec["selector"]["matchLabels"],
        _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        _one("Service")["spec"]["selector"],
    ):
        assert selector.items() <= labels.items()
    config = _one("ConfigMap")["metadata"]["name"]
    assert {"name": "config", "configMap": {"name": config}} in pod["volumes"]


def test_the_configmaps_and_composes_callstream_yaml_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLSTREAM_DATABASE__URL", "postgresql+asyncpg://u:p@postgres/callstream")
    files = {
        "k8s": _one("ConfigMap")["data"]["callstream.yaml"],
        "compose": (REPO / "deploy" / "compose" / "callstream.yaml").read_text(),
    }
    for name, text in files.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        settings = load_settings(path)
        assert settings.kafka.bootstrap_servers == "kafka:9092", name
        assert settings.http.host == "0.0.0.0", name  # noqa: S104 - the pod's listener
        assert settings.http.port == 8080, name
        assert settings.media.type == "s3", name


# -- docker compose -----------------------------------------------------------------------------


def _compose_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_matches_the_compose_schema() -> None:
    jsonschema.Draft201909Validator.check_schema(json.loads(COMPOSE_SCHEMA.read_text()))
    assert _compose_errors(yaml.safe_load(COMPOSE.read_text())) == []


def test_the_compose_schema_rejects_broken_files() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    misspelt = copy.deepcopy(doc)
    misspelt["services"]["kafka"]["imagee"] = misspelt["services"]["kafka"].pop("image")
    assert any("imagee" in e for e in _compose_errors(misspelt))
    wrong_type = copy.deepcopy(doc)
    wrong_type["services"]["postgres"]["healthcheck"]["interval"] = 5
    assert any("interval" in e for e in _compose_errors(wrong_type))


def test_the_compose_stack_is_complete() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    images = {name: s.get("image", "") for name, s in services.items()}
    assert images["kafka"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert images["postgres"].startswith("postgres:")
    assert images["minio"].startswith("minio/minio:")
    assert images["prometheus"].startswith("prom/prometheus:")
    assert images["grafana"].startswith("grafana/grafana:")
    workers = [s for name, s in services.items() if name.startswith("callstream-")]
    assert len(workers) == 2
    for worker in workers:
        assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
        assert "--roles" in worker["command"]
        assert worker["read_only"] is True
        for value in worker["environment"].values():
            assert "change-me" not in str(value)
    for service in services.values():  # every mounted file or folder of the repository exists
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
    prometheus_mounts = " ".join(services["prometheus"]["volumes"])
    assert "deploy/prometheus/alerts.yml" in prometheus_mounts


# -- the image ----------------------------------------------------------------------------------


def test_the_dockerfile_builds_the_wheel_and_installs_it_pinned() -> None:
    commands = dockerfile.parse_file(str(DOCKERFILE))
    stages = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    assert len(stages) == 2, "a builder stage and a runtime stage"
    builder, runtime = commands[stages[0] : stages[1]], commands[stages[1] :]
    assert builder[0].value[-1] == "builder"
    assert any(c.cmd == "RUN" and "pip wheel" in c.value[0] for c in builder)
    copies = [c for c in runtime if c.cmd == "COPY"]
    assert any("--from=builder" in c.flags for c in copies)
    installs = [c.value[0] for c in runtime if c.cmd == "RUN" and "pip install" in c.value[0]]
    assert any(
        "--constraint /tmp/requirements.lock" in i and "callstream-*.whl" in i for i in installs
    )
    user = next(c.value[0] for c in runtime if c.cmd == "USER")
    assert user.split(":")[0] not in ("root", "0")
    for c in commands:  # every COPY from the build context names something that exists
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
            for source in c.value[:-1]:
                assert (REPO / source).exists(), source


def test_the_dockerfile_parser_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:3.11-slim\nRUN <<EOF\necho unterminated\n")
    with pytest.raises(dockerfile.GoParseError, match="unterminated heredoc"):
        dockerfile.parse_file(str(broken))


def _pins(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        requirement = line.split(";")[0].split("#")[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==")
            name = re.sub(r"\[.*\]", "", name)
            out[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return out


def test_the_image_lock_agrees_with_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = _pins(project["dependencies"])
    locked = _pins(LOCK.read_text().splitlines())
    assert wanted, "pyproject.toml pins its dependencies"
    differ = {n: (v, locked.get(n)) for n, v in wanted.items() if locked.get(n) != v}
    assert not differ, f"run scripts/lock_image_deps.sh: pyproject vs lock {differ}"


# -- Prometheus and Grafana ---------------------------------------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/bootstrap.sh installs Debian's prometheus"
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_checks_the_rules_and_the_config() -> None:
    rules = _promtool("check", "rules", str(ALERTS))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 7 rules found" in rules.stdout
    config = _promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = _promtool("test", "rules", str(PROMETHEUS / "tests" / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_broken_rules(tmp_path: Path) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "sum by (tenant (callstream_records_accepted_total)"
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(rules))
    assert _promtool("check", "rules", str(broken)).returncode != 0


def test_the_dashboards_expressions_parse(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": plain_promql(e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_covers_the_pipeline_and_uses_the_provisioned_datasource() -> None:
    board = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
    names = metric_names(dashboard_exprs())
    for needed in (
        "callstream_records_accepted_total",  # ingest rate
        "callstream_records_rejected_total",  # rejected by reason
        "callstream_cases_opened_total",
        "callstream_results_published_total",
        "callstream_end_to_end_latency_seconds_bucket",  # p50/p99
        "callstream_consumer_lag_messages",
        "callstream_connector_last_success_timestamp_seconds",
        "callstream_connector_poll_errors_total",
        "callstream_connector_expected_file_missing",
    ):
        assert needed in names, needed
    rule_names = metric_names(alert_exprs())
    assert "callstream_connector_expected_file_missing" in rule_names
