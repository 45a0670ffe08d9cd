# The two commands of the README's quickstart, plus the pieces they are made of.
# Every target installs what it needs first (scripts/bootstrap.sh is idempotent).

.PHONY: run test lint unit integration bench bootstrap

run: bootstrap          ## run the service on its embedded defaults (local Kafka, SQLite, demo tenant)
	.venv/bin/callstream run

test: bootstrap         ## the whole suite: lint, type check, unit and integration tests, benchmarks
	scripts/test.sh

lint: bootstrap
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

unit: bootstrap
	.venv/bin/pytest tests/unit -q

integration: bootstrap
	.venv/bin/pytest tests/integration -q

bench: bootstrap        ## benchmarks: print figures, assert nothing about speed
	.venv/bin/pytest tests/benchmarks -q -s -m benchmark

bootstrap:
	@scripts/bootstrap.sh
