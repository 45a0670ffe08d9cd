"""Every Prometheus metric of callstream, registered on an injectable registry.

Names follow ``callstream_<noun>_<unit>[_total]``; durations are seconds; labels are bounded
(tenant, connector, reason, kind, action) and never carry a file name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_POLL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LATENCY_BUCKETS = (0.25, 0.5, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300, 600)


class Metrics:
    """The metric families, created once per process (or per test with its own registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        conn = ["tenant", "connector"]
        self.files_listed = Counter(
            "callstream_connector_files_listed_total",
            "Regular files seen in listings (counted on every poll).",
            conn,
            registry=r,
        )
        self.files_announced = Counter(
            "callstream_connector_files_announced_total",
            "File versions published to the file-arrivals topic.",
            conn,
            registry=r,
        )
        self.files_skipped = Counter(
            "callstream_connector_files_skipped_total",
            "Listed entries not announced on a poll, by reason "
            "(symlink, special_file, unsafe_name, excluded, too_young, unstable, awaiting_marker, "
            "stale_marker).",
            [*conn, "reason"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "callstream_connector_poll_duration_seconds",
            "Time to list a store and decide what is ready.",
            conn,
            buckets=_POLL_BUCKETS,
            registry=r,
        )
        self.poll_errors = Counter(
            "callstream_connector_poll_errors_total",
            "Failed polls, by kind (network, auth, host_key, kafka, ...).",
            [*conn, "kind"],
            registry=r,
        )
        self.last_success = Gauge(
            "callstream_connector_last_success_timestamp_seconds",
            "Unix time of the connector's last successful poll.",
            conn,
            registry=r,
        )
        self.expected_file_missing = Gauge(
            "callstream_connector_expected_file_missing",
            "1 when the connector's expect_file deadline (HH:MM in its time zone) has passed "
            "today and no file version was announced since that day's local midnight, else 0; "
            "exported by the worker running the connector, only for connectors with expect_file.",
            conn,
            registry=r,
        )
        self.cleanups = Counter(
            "callstream_connector_cleanups_total",
            "Clean-up after downstream outcomes, by action: deferred, incomplete, kept, "
            "moved_processed, moved_invalid, deleted, settled, moved_back, move_back_blocked, "
            "superseded, missing, failed.",
            [*conn, "action"],
            registry=r,
        )
        tenant = ["tenant"]
        self.records_accepted = Counter(
            "callstream_records_accepted_total",
            "Conversation rows that passed validation.",
            conn,
            registry=r,
        )
        self.records_rejected = Counter(
            "callstream_records_rejected_total",
            "Rows or files dead-lettered, by reason code.",
            [*conn, "reason"],
            registry=r,
        )
        self.source_records = Counter(
            "callstream_source_records_total",
            "Rows of source-type files (seed 002) by change: created, updated, unchanged, "
            "deleted (tombstones of a re-uploaded date's file).",
            [*conn, "change"],
            registry=r,
        )
        self.cases_opened = Counter(
            "callstream_cases_opened_total", "Cases opened.", tenant, registry=r
        )
        self.cases_updated = Counter(
            "callstream_cases_updated_total",
            "Cases updated by a changed version of their conversation.",
            tenant,
            registry=r,
        )
        self.duplicates_absorbed = Counter(
            "callstream_duplicates_absorbed_total",
            "Redelivered or re-uploaded conversations that changed nothing.",
            tenant,
            registry=r,
        )
        self.case_batch_records = Histogram(
            "callstream_case_batch_records",
            "Conversations per case-store batch, by lane: batches near processors.batch_size "
            "mean the lane has a backlog (the processors are the limit), small ones that it "
            "keeps up.",
            ["lane"],
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.results_published = Counter(
            "callstream_results_published_total",
            "AnalysisResult records published on the feedback topic.",
            registry=r,
        )
        self.end_to_end_latency = Histogram(
            "callstream_end_to_end_latency_seconds",
            "From file announced to analysis result published.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.processing_failures = Counter(
            "callstream_processing_failures_total",
            "Failed attempts of a processing stage, by failure kind (transient, permanent, "
            "unknown); transient ones are retried forever.",
            ["stage", "kind"],
            registry=r,
        )
        self.recording_fetches = Counter(
            "callstream_recording_fetches_total",
            "Attempts at fetching a recording by reference, by outcome (stored, retried: a "
            "retryable failure that will be tried again, failed: dead-lettered).",
            ["tenant", "outcome"],
            registry=r,
        )
        self.recording_fetch_seconds = Histogram(
            "callstream_recording_fetch_seconds",
            "Time of one fetch attempt of a recording by reference (request to stored).",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.transcriptions = Counter(
            "callstream_transcriptions_total",
            "Recordings transcribed, by outcome (transcribed, retried: the engine failed and it "
            "will be tried again, failed: the case keeps its voice metrics and a reason).",
            ["tenant", "outcome"],
            registry=r,
        )
        self.transcription_rtf = Histogram(
            "callstream_transcription_real_time_factor",
            "Transcription time divided by the recording's duration, per recording.",
            registry=r,
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0),
        )
        self.platform_feedback = Counter(
            "callstream_platform_feedback_total",
            "Analysis results acknowledged by a platform cluster on its feedback topic.",
            conn,
            registry=r,
        )
        self.poison_records = Counter(
            "callstream_poison_records_total",
            "Records isolated by bisection after repeated unknown failures and dead-lettered "
            "(processing_failed).",
            ["stage"],
            registry=r,
        )
        self.recordings_metadata_missing = Counter(
            "callstream_recordings_metadata_missing_total",
            "Recordings reported because their metadata had not arrived within the connector's "
            "recordings.metadata_timeout_seconds (each reported once; it still pairs later).",
            tenant,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "callstream_consumer_lag_messages",
            "Messages not yet consumed by a processor group, per topic.",
            ["group", "topic"],
            registry=r,
        )
