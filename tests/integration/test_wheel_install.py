"""The wheel is a working install: built, installed into a fresh virtualenv outside the checkout,
and run from there against the real broker.

The wheel is built from exactly what deploy/Dockerfile copies into the image, so a file the
image needs but does not copy fails here too. Dependencies come from the package index as
pinned in pyproject.toml and constrained by deploy/requirements.lock, as in the image (pip's
own cache is outside the checkout; nothing is cached inside it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

from support import (
    TopicReader,
    connector,
    conversations_csv,
    settings_for,
    start_service,
    topics,
    wait_for_log,
    write_config,
)

from connectors.local import LocalConfig

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
GRACE = 20.0


def _dockerfile_sources() -> list[str]:
    """The paths deploy/Dockerfile copies from the build context (every COPY but its target;
    not the runtime stage's copy of the builder's wheel)."""
    sources: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words and words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert sources, "deploy/Dockerfile copies nothing"
    return sources


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout[-3000:]}{result.stderr}"
    return result.stdout


def _packages(root: Path) -> set[str]:
    """Dotted names of the regular packages (folders with __init__.py) under ``root``."""
    return {
        ".".join(p.parent.relative_to(root.parent).parts)
        for p in root.rglob("__init__.py")
        if "__pycache__" not in p.parts
    }


async def test_the_wheel_installs_into_a_fresh_virtualenv_and_runs(
    kafka: str, prefix: str, tmp_path: Path
) -> None:
    assert not tmp_path.resolve().is_relative_to(REPO)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLSTREAM_", "PYTHON"))}
    env["PYTHONUNBUFFERED"] = "1"

    # 1. build the wheel from the image's build context, copied outside the checkout
    context = tmp_path / "context"
    context.mkdir()
    for source in _dockerfile_sources():
        path = REPO / source
        if path.is_dir():
            shutil.copytree(
                path,
                context / source,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        else:
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / source)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), "."], context, env)
    (wheel,) = dist.glob("callstream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in _packages(REPO / "streams") | _packages(REPO / "connectors"):
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    schemas = sorted(p.name for p in (REPO / "avro").glob("*.avsc"))
    assert sorted(n.split("/")[-1] for n in names if n.startswith("streams/schemas/")) == schemas
    console = REPO / "streams" / "console"
    for data in [*console.glob("templates/**/*.html"), *console.glob("static/*")]:
        assert str(data.relative_to(REPO)) in names, f"the wheel lacks the console's {data.name}"

    # 2. install it, with its pinned dependencies, into a fresh virtualenv, as the image's
    # runtime stage does (every dependency constrained by deploy/requirements.lock)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    lock = str(context / "deploy" / "requirements.lock")
    _run(
        [str(venv / "bin/pip"), "install", "--quiet", "--constraint", lock, str(wheel)],
        tmp_path,
        env,
    )
    callstream = str(venv / "bin" / "callstream")

    # 3. check-config and a short run from that install, outside the checkout
    workdir = tmp_path / "work"
    inbox = workdir / "inbox"
    inbox.mkdir(parents=True)
    settings = settings_for(
        kafka,
        prefix,
        workdir / "data",
        [connector("drop", LocalConfig(root=inbox))],
        shutdown_grace_seconds=GRACE,
    )
    # schemas_dir left to the installed default, which must find the wheel's schemas
    config = write_config(workdir / "callstream.yaml", settings, frozenset({"schemas_dir"}))
    out = _run([callstream, "--config", str(config), "check-config"], workdir, env, 60)
    installed = next(venv.glob("lib/python*/site-packages/streams/schemas"))
    assert f"schemas: {len(schemas)} valid in {installed}" in out, out
    assert "configuration is valid" in out, out

    t = topics(prefix)
    conversations = TopicReader(kafka, t.conversations, "callstream.Conversation")
    outcomes = TopicReader(kafka, t.file_outcomes, "callstream.FileOutcome")
    log = workdir / "run.log"
    proc = start_service(config, log, env, command=[callstream], cwd=workdir)
    try:
        wait_for_log(log, "callstream is running", 120)
        (inbox / "calls.csv").write_bytes(conversations_csv(25))
        await conversations.wait_for(lambda rs: len(rs) >= 25, 90)
        await outcomes.wait_for(lambda rs: len(rs) >= 1, 30)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=GRACE + 10)
    finally:
        conversations.close()
        outcomes.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 0, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    assert {c["external_interaction_id"] for c in conversations.records} == {
        f"CALL-{i:06d}" for i in range(25)
    }
    assert [(o["path"], o["outcome"], o["rows_accepted"]) for o in outcomes.records] == [
        ("calls.csv", "processed", 25)
    ]
