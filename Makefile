# The two commands of the README's quickstart, plus the pieces they are made of.
# Every target installs what it needs first (scripts/bootstrap.sh is idempotent).

.PHONY: run test lint unit integration bench bench-pipeline bench-fairness bench-ingest bench-peer bench-media bench-s3 bench-export bench-voice console-screenshots fuzz fuzz-ci hostile hostile-ci bootstrap

run: bootstrap          ## run the service on its embedded defaults (local Kafka, SQLite, demo tenant)
	.venv/bin/callstream run

test: bootstrap         ## the whole suite: lint, type check, unit and integration tests, benchmarks
	scripts/test.sh

lint: bootstrap
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

unit: bootstrap
	.venv/bin/pytest tests/unit -q

integration: bootstrap
	.venv/bin/pytest tests/integration -q -n 3 --dist worksteal

bench: bootstrap        ## benchmarks: print figures, assert nothing about speed
	.venv/bin/pytest tests/benchmarks -q -s -m benchmark

bench-media: bootstrap  ## peak RSS and MB/s copying a 2 GB recording from SFTP to the S3 media store
	CALLSTREAM_BENCH_MEDIA_BYTES=2000000000 .venv/bin/pytest tests/benchmarks/test_media_bench.py -q -s -m benchmark -p no:cacheprovider
bench-s3: bootstrap     ## the S3 benchmark at full size: 10,000 / 100,000 objects, a 500 MB object
	CALLSTREAM_S3_BENCH_FULL=1 .venv/bin/pytest tests/benchmarks/test_s3_bench.py -q -s -m benchmark --timeout=3600

bench-pipeline: bootstrap ## the pipeline benchmark (as CI runs it): a 100,000-row CSV, raw limit over 100,000 records
	.venv/bin/pytest tests/benchmarks/test_pipeline_bench.py -q -s -m benchmark -p no:cacheprovider --timeout=3600

bench-fairness: bootstrap ## tenant B's single-row files (1 s poll) while tenant A's 1,000,000-row file processes: B's p50/p99, A's throughput drop
	CALLSTREAM_FAIRNESS_BENCH_ROWS=1000000 .venv/bin/pytest tests/benchmarks/test_fairness_bench.py -q -s -m benchmark -p no:cacheprovider --timeout=7200

bench-ingest: bootstrap ## file -> conversations topic: Kafka's limit, the Kafka Connect + FilePulse peer, callstream (100,000 rows)
	.venv/bin/pytest tests/benchmarks/test_ingest_bench.py -q -s -m benchmark -p no:cacheprovider --timeout=3600

bench-peer: bootstrap   ## the peer alone: Kafka Connect 3.9.1 + FilePulse, CSV -> topic rows/s (jars from Maven Central)
	CALLSTREAM_INGEST_BENCH_ONLY=peer .venv/bin/pytest tests/benchmarks/test_ingest_bench.py -q -s -m benchmark -p no:cacheprovider --timeout=3600

bench-export: bootstrap ## time and peak RSS to export 1,000,000 results as CSV and as Excel (PostgreSQL)
	CALLSTREAM_EXPORT_BENCH_ROWS=1000000 .venv/bin/pytest tests/benchmarks/test_export_bench.py -q -s -m benchmark -p no:cacheprovider --timeout=3600

bench-voice: bootstrap  ## 100 generated 2-5 min calls: decode+VAD s per audio hour, pocketsphinx RTF (20 calls), peak RSS
	CALLSTREAM_VOICE_BENCH_CALLS=100 CALLSTREAM_VOICE_BENCH_TRANSCRIBE_CALLS=20 .venv/bin/pytest tests/benchmarks/test_voice_bench.py -q -s -m benchmark -p no:cacheprovider --timeout=3600

console-screenshots: bootstrap ## run the console's browser tests and refresh the README's screenshots in docs/console/
	CALLSTREAM_SCREENSHOTS_DIR=build/console-screenshots .venv/bin/pytest tests/integration/test_console_*.py -q
	for f in $$(grep -o 'docs/console/[a-z0-9-]*\.png' README.md); do cp build/console-screenshots/$$(basename $$f) $$f; done

fuzz: bootstrap         ## every fuzz harness for 1,000,000 executions: figures, exit 1 on a crash
	.venv/bin/python tests/fuzz/runner.py --runs 1000000

fuzz-ci: bootstrap      ## every fuzz harness for FUZZ_SECONDS (10) s, as CI runs them
	.venv/bin/python tests/fuzz/runner.py --seconds $${FUZZ_SECONDS:-10}

hostile: bootstrap      ## 10,000 hostile files through a running service: fails on crash, stall, lost row
	.venv/bin/python tests/hostile/run.py --count 10000

hostile-ci: bootstrap   ## the 1,000-file slice CI runs (tests/integration/test_hostile.py)
	.venv/bin/python tests/hostile/run.py --count 1000

bootstrap:
	@scripts/bootstrap.sh
