#!/usr/bin/env bash
# Install everything callstream needs on a fresh Debian machine: system packages (OpenSSH
# server, PostgreSQL, Java, Maven), a virtualenv with the pinned Python dependencies, and the
# Apache Kafka jars from Maven Central. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
# test calls for the voice metrics: speech, stereo mixing, flac/ogg/mp3 encoding
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox libsox-fmt-all)
command -v lame >/dev/null || need_apt+=(lame)
# the console's browser tests: Debian's Chromium, driven by Playwright (its own download is
# not reachable from CI)
command -v chromium >/dev/null || need_apt+=(chromium)
# promtool checks and unit-tests deploy/prometheus's alert rules (Debian's prometheus ships it)
command -v promtool >/dev/null || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "==> installing system packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "==> creating virtualenv .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "==> installing Python dependencies (pinned in pyproject.toml)"
    .venv/bin/python -m pip install -q --upgrade pip==25.3 || true
    .venv/bin/python -m pip install -q -e '.[dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi

echo "==> fetching Apache Kafka jars (cached in ~/.m2 and ~/.cache/callstream)"
.venv/bin/callstream kafka fetch
