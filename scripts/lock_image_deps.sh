#!/usr/bin/env bash
# Regenerate deploy/requirements.lock (the image's pinned runtime dependencies): install the
# project into a fresh virtualenv outside the checkout and freeze it. Run after changing
# pyproject.toml's dependencies; tests/unit/deploy fails while the two disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install -q pip==25.3
"$venv/bin/pip" install -q .
{
    sed -n '1,4p' deploy/requirements.lock
    "$venv/bin/pip" freeze --exclude callstream
} > deploy/requirements.lock.new
mv deploy/requirements.lock.new deploy/requirements.lock
echo "deploy/requirements.lock: $(grep -c '==' deploy/requirements.lock) pins"
