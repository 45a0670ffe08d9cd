"""Assemble and run every role of callstream in one process (``callstream run``).

Start order: the managed local Kafka broker (only when no ``kafka.bootstrap_servers`` is set),
topics, the connector state database, the producer, the connector runner, the file-outcome
consumer, the SFTP drop box (``dropbox.enabled``), the HTTP endpoint and, for the local stack,
the live echo of events. Before any client starts, one metadata request checks that Kafka
answers and accepts ``kafka.client_config``'s login, so wrong credentials fail the start with
one clear error instead of every client retrying the login. :meth:`Service.start` raises on
the first part that cannot start, naming it.

Stop order is the reverse, bounded: :meth:`Service.stop` gives all parts together
``shutdown_grace_seconds``; a part still stopping when its share runs out (a processor retrying
against a broker that is gone, a producer flushing to nobody) is abandoned and named, and the
managed broker is stopped in time kept for it, then killed. Abandoned work was not acknowledged,
so it is redelivered on the next start.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiohttp import web
from confluent_kafka.admin import AdminClient
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.netguard import AddressGuard
from streams.agents import cases as cases_agent
from streams.agents import deadletters as deadletters_agent
from streams.agents import files as files_agent
from streams.api.app import create_app as create_http_app
from streams.api.context import ApiContext
from streams.app import create_app
from streams.cases.store import CaseStore, OutboxRelay
from streams.clock import Clock, SystemClock
from streams.codec import AvroCodec
from streams.connector_health import HealthReporter
from streams.control import tenants
from streams.control.catalog import Catalog
from streams.control.secrets import SecretBox
from streams.db import claim_sqlite_file
from streams.deadletters import DeadLetters
from streams.demo import seed
from streams.dropbox.server import DropboxServer
from streams.echo import Echo
from streams.embedded.kafka import LocalKafka
from streams.errors import ConfigError
from streams.expected import ExpectedFileMonitor
from streams.exports.run import Exporter, ReportBuilder
from streams.exports.storage import ReportStore, purge_expired
from streams.fetch.settings import RecordingFetchSettings
from streams.fetch.worker import RecordingFetcher
from streams.health import Readiness, database_check, faust_assignment_check, kafka_check
from streams.ingest.bundles import BundleStore, BundleSweeper
from streams.ingest.files import FileProcessor
from streams.ingest.recordings import RecordingSettings
from streams.kafka import Producer, check_connection, client_config, session_config
from streams.lag import LagMonitor
from streams.media import MediaStore
from streams.media_s3 import open_media_store
from streams.metrics import Metrics
from streams.notify import FailureWatcher, notify_failure
from streams.ownership import Ownership, connector_group_check, worker_name
from streams.platform.feedback import FeedbackRelay
from streams.platform.inbound import PlatformInbound
from streams.redact import tenant_redactors
from streams.runner import ConnectorRunner, OutcomeConsumer
from streams.scheduler import Scheduler
from streams.settings import Settings
from streams.state import ConnectorState
from streams.systemjobs import RetentionJob
from streams.topics import LANES, LIVE, Lane, Topics, check_record_limit, ensure_topics
from streams.voice.transcribe import Transcriber, TranscriberError, make_transcriber
from streams.voice.worker import TranscriptionWorker

log = logging.getLogger(__name__)

BROKER = "local Kafka broker"
_BROKER_KILL_SECONDS = 2.0  # SIGKILL and reaping after the broker's own stop timeout


class Service:
    """The running process: owns every long-lived part and stops them in reverse order."""

    def __init__(
        self,
        settings: Settings,
        *,
        echo: bool = False,
        metrics: Metrics | None = None,
        say: Callable[[str], None] = print,
        clock: Clock | None = None,
    ) -> None:
        if settings.demo_enabled:
            settings = seed.with_demo_tenant(settings)
        self.settings = settings
        self.echo_enabled = echo
        self.metrics = metrics or Metrics()
        self.say = say
        self.clock: Clock = clock or SystemClock()
        self.codec = AvroCodec(settings.schemas_dir)
        self.topics = Topics(settings.kafka.topic_prefix)
        self.kafka: LocalKafka | None = None
        self.http_url: str | None = None
        self.cases: CaseStore | None = None
        self.media: MediaStore | None = None
        self.dropbox: DropboxServer | None = None
        self._stack: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        self._stop_deadline = 0.0
        self.unstopped: list[str] = []
        """Parts abandoned because they did not stop within the grace period."""
        self.start_interrupted = False
        """A stop came while starting; a blocking start-up call may still run in a thread."""
        self.worker = worker_name()
        """This process's name in claimed runs and connector health reports."""
        self.readiness = Readiness()
        """The checks of ``/readyz``: each part adds its own as it starts."""

    async def start(self) -> None:
        """Start every part; on failure, stop what was started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        release = claim_sqlite_file(s.database_url)  # before the broker: fail fast

        async def release_database_file() -> None:
            release()

        self._stack.append(("database file claim", release_database_file))
        bootstrap = s.kafka.bootstrap_servers
        if bootstrap is None:
            self.say("starting the local Kafka broker (first run fetches its jars with Maven) ...")
            self.kafka = LocalKafka(s.data_dir / "kafka", port=s.kafka.embedded_port)
            kafka = self.kafka
            self._stack.append((BROKER, self._stop_broker))  # also when start is interrupted
            await loop.run_in_executor(None, kafka.start)
            bootstrap = kafka.bootstrap_servers
            self.say(f"local Kafka is up at {bootstrap}")
        cfg = client_config(bootstrap, s.kafka.client_config)
        await loop.run_in_executor(None, check_connection, cfg)
        self.readiness.add("kafka", kafka_check(cfg))
        admin = AdminClient(cfg)
        await loop.run_in_executor(
            None,
            ensure_topics,
            admin,
            self.topics.all(),
            s.kafka.partitions,
            s.kafka.replication_factor,
        )
        await loop.run_in_executor(
            None, check_record_limit, admin, self.topics.all(), s.kafka.message_max_bytes
        )
        if s.demo_enabled:
            written = await loop.run_in_executor(None, seed.seed, s)
            if written:
                self.say(f"demo: copied {len(written)} sample files into {seed.inbox(s)}")

        state = ConnectorState(s.database_url)
        await state.start()
        self._stack.append(("connector state", state.stop))
        self.readiness.add("database", database_check(state.engine))
        await tenants.sync_config_tenants(state.engine, [t.id for t in s.tenants])
        self.state = state
        self.secrets = await asyncio.to_thread(
            SecretBox.from_settings, s.api.secret_keys, s.data_dir
        )
        self.redactors = tenant_redactors(s.tenants, self.secrets.derive_keys)
        self.catalog = Catalog(s, state.engine, self.secrets, self.redactors)
        await self.catalog.reload_redaction()  # API tenants' policies before any record

        producer = Producer(
            {
                **cfg,
                "client.id": f"{self.topics.prefix}-connector-runner",
                "message.max.bytes": s.kafka.message_max_bytes,
            }
        )
        await producer.start()
        self._stack.append(("producer", producer.stop))

        if self.echo_enabled:
            echo = Echo(cfg, self.topics, self.codec, self.say)
            await echo.start()
            self._stack.append(("event echo", echo.stop))

        if s.runs("processors"):
            await self._start_processors(bootstrap, producer)
        self.runner: ConnectorRunner | None = None
        if s.runs("connectors"):
            await self._start_platform(cfg, producer)
            await self._start_connectors(cfg, producer)

        self.scheduler: Scheduler | None = None
        self.api = ApiContext(
            settings=s,
            engine=state.engine,
            codec=self.codec,
            topics=self.topics,
            metrics=self.metrics,
            producer=producer,
            runner=self.runner,
            cases=self.cases,
            media=self.media,
            secrets=self.secrets,
            redaction=self.redactors,
            clock=self.clock,
        )
        http_app = create_http_app(
            self.metrics, self.runner, self.api, self.readiness, serve_api=s.runs("api")
        )
        # Request lines up to 32 KiB: a long (even hostile) query string gets a problem detail
        # from the API rather than aiohttp's plain-text 400 at 8 KiB.
        app_runner = web.AppRunner(
            http_app, access_log=None, max_line_size=32_768, max_field_size=32_768
        )
        await app_runner.setup()
        site = web.TCPSite(app_runner, s.http.host, s.http.port)
        await site.start()
        self._stack.append(("HTTP endpoint", app_runner.cleanup))
        port = app_runner.addresses[0][1]
        self.http_url = f"http://{s.http.host}:{port}"
        if s.scheduler.enabled:
            await self._start_scheduler(state.engine, self.http_url)
        roles = ", ".join(r for r in ("connectors", "processors", "api") if s.runs(r))
        running = "" if self.runner is None else f"{len(self.runner.contexts)} connector(s), "
        self.say(f"callstream is running ({roles}): {running}metrics at {self.http_url}/metrics")
        if s.console.enabled and s.runs("api"):
            self.say(
                f"web console at {self.http_url}/console: sign in with an API key "
                "(callstream keys create <tenant>) or the operator token"
            )
        if s.demo_enabled:
            self.say(f"demo: drop files into {seed.inbox(s)} to see them announced; Ctrl-C stops")

    async def _start_connectors(self, cfg: dict[str, Any], producer: Producer) -> None:
        """The connector runner, its group membership (the file-outcome consumer: see
        :mod:`streams.ownership`) and the SFTP drop box. Waits, up to three session timeouts,
        for the group to hand this worker its share of the connectors."""
        s = self.settings
        self.ownership = Ownership()
        runner = ConnectorRunner(
            s,
            producer,
            self.state,
            self.codec,
            self.metrics,
            self.topics,
            self.catalog,
            ownership=self.ownership,
            worker=self.worker,
        )
        await runner.start()
        self._stack.append(("connector runner", runner.stop))
        self.runner = runner
        health = HealthReporter(self.state.engine, runner.statuses, runner.worker)
        await health.start()
        self._stack.append(("connector health reports", health.stop))
        expected = ExpectedFileMonitor(runner, self.state.engine, self.metrics, self.clock)
        await expected.start()
        self._stack.append(("expected-file monitor", expected.stop))
        outcomes = OutcomeConsumer(
            runner, cfg, f"{self.topics.prefix}.connector-runner", self.ownership
        )
        await outcomes.start()
        self._stack.append(("file-outcome consumer", outcomes.stop))
        self.readiness.add("connectors", connector_group_check(self.ownership))
        wait = 3 * s.processors.session_timeout_seconds
        if not await self.ownership.wait_settled(wait):
            log.warning(
                "connector group: no assignment after %.0fs; connectors start when it comes", wait
            )
        if s.dropbox.enabled:
            self.dropbox = DropboxServer(s, self.state.engine, self.secrets, runner.wake)
            await self.dropbox.start()
            self._stack.append(("SFTP drop box", self.dropbox.stop))

    async def _start_scheduler(self, engine: AsyncEngine, base_url: str) -> None:
        """Jobs, export runs, the daily system runs (after the HTTP endpoint: links need its
        address when ``http.public_url`` is unset)."""
        s = self.settings
        reports = ReportStore.from_settings(s, self.secrets, base_url, self.media)
        self.reports = ReportBuilder(s, engine, self.codec, reports)
        retention = RetentionJob(s, self.catalog)
        scheduler = Scheduler(
            s,
            engine,
            self.clock,
            importer=self.runner,
            exporter=Exporter(s, engine, self.secrets, self.reports, self.clock.now),
            system_job=retention.run,
            system_tenants=retention.tenants,
            daily=functools.partial(purge_expired, engine, reports),
            notify=functools.partial(notify_failure, s, engine, self.clock),
            worker=self.worker,
        )
        await scheduler.start()
        self._stack.append(("scheduler", scheduler.stop))
        self.scheduler = scheduler
        self.api.scheduler = scheduler
        self.api.reports = self.reports

    async def _start_processors(self, bootstrap: str, producer: Producer) -> None:
        s = self.settings
        cases = CaseStore(s.database_url, self.codec, self.topics, s.profiles_of)
        await cases.start()
        self._stack.append(("case store", cases.stop))
        self.cases = cases
        self.failure_watcher: FailureWatcher | None = None
        if s.mail.host:  # failure notices: always on where mail can go
            watcher = FailureWatcher(s, cases.engine, self.clock)
            await watcher.start()
            self._stack.append(("failure watcher", watcher.stop))
            self.failure_watcher = watcher
        relay = OutboxRelay(cases, producer, metrics=self.metrics)
        await relay.start()
        self._stack.append(("outbox relay", relay.stop))
        media = open_media_store(s)
        self.media = media
        await asyncio.to_thread(media.start)  # S3: abort what a killed process left unfinished
        bundles = BundleStore(cases)
        self.bundles = bundles
        processors: dict[Lane, FileProcessor] = {}
        for lane in LANES:  # each lane its own store sessions: a bulk read never holds a live one
            processors[lane] = FileProcessor(
                s,
                self.codec,
                self.topics.in_lane(lane),
                producer,
                self.metrics,
                cases,
                media,
                bundles,
                self.catalog,
                redactors=self.redactors,
            )
            self._stack.append((f"file processor ({lane} lane)", _async(processors[lane].close)))
        processor = self.processor = processors[LIVE]
        sweeper = BundleSweeper(
            bundles,
            self._bundle_connectors,
            processor.dead,
            self.metrics,
            relay.wake,
        )
        await sweeper.start()
        self._stack.append(("bundle sweeper", sweeper.stop))
        fetcher = RecordingFetcher(
            cases.engine,
            media,
            producer,
            self.codec,
            self.topics,
            processor.dead,
            self.metrics,
            self._fetch_settings,
            AddressGuard(s.api.connect_allow),
            max_record_bytes=s.kafka.message_max_bytes,
            redactors=processor.redactors,
        )
        await fetcher.start()
        self._stack.append(("recording fetcher", fetcher.stop))
        self.fetcher = fetcher
        self.transcriber: TranscriptionWorker | None = None
        transcriber = self._transcriber()
        if transcriber is not None:
            worker = TranscriptionWorker(
                cases.engine,
                media,
                producer,
                self.codec,
                self.topics,
                self.metrics,
                s.voice,
                transcriber,
                processor.redactors,
                max_record_bytes=s.kafka.message_max_bytes,
            )
            await worker.start()
            self._stack.append(("transcriptions", worker.stop))
            self.transcriber = worker
        writer = cases_agent.CaseWriter(cases, producer, processor.dead, self.metrics, s.processors)
        groups: dict[str, list[str]] = {}
        kafka_config = client_config(bootstrap, s.kafka.client_config)
        self.faust_apps: dict[Lane, faust.App] = {}
        for lane in LANES:  # one Faust app (consumer group) per lane: see streams.app.create_app
            topics = self.topics.in_lane(lane)
            app = create_app(s, bootstrap, topics)
            files_agent.register(
                app, topics, self.codec, processors[lane], producer, self.metrics, s.processors
            )
            groups[app.conf.id] = [topics.file_arrivals]
            if lane == LIVE:
                deadletters_agent.register(
                    app, topics, self.codec, cases.engine, self.metrics, s.processors
                )
                groups[app.conf.id].append(topics.dead_letter)
            # stopped also when start fails midway
            self._stack.append((f"stream processors ({lane} lane)", app.stop))
            await app.start()
            self.faust_apps[lane] = app
            check = "processors" if lane == LIVE else f"processors-{lane}"
            self.readiness.add(check, faust_assignment_check(app))
            consumer = cases_agent.CasesConsumer(
                kafka_config, topics, self.codec, writer, relay, self.metrics, s.processors
            )
            self._stack.append((f"cases consumer ({lane} lane)", consumer.stop))
            await consumer.start()  # stopped also when start fails midway
            self.readiness.add(f"cases-{lane}" if lane != LIVE else "cases", consumer.readiness())
            groups[consumer.group] = [topics.conversations]
        self.faust_app = self.faust_apps[LIVE]
        groups[f"{self.topics.prefix}.connector-runner"] = [self.topics.file_outcomes]
        lag = LagMonitor(kafka_config, self.metrics, groups)
        await lag.start()
        self._stack.append(("lag monitor", lag.stop))

    def _transcriber(self) -> Transcriber | None:
        """The configured transcription engine, or None (voice metrics or transcription off);
        an engine that cannot be set up is a configuration error naming the field."""
        voice = self.settings.voice
        if not voice.enabled:
            return None
        try:
            return make_transcriber(voice.transcription)
        except TranscriberError as exc:
            raise ConfigError([f"voice.transcription: {exc}"]) from exc

    async def _fetch_settings(self, tenant: str, connector: str) -> RecordingFetchSettings | None:
        """The recording_fetch settings of a running file or platform connector (None: none)."""
        entry = await self.catalog.find(tenant, connector)
        if entry is not None:
            return entry.settings.recording_fetch
        platform = next(
            (
                p
                for t in self.settings.tenants
                if t.id == tenant
                for p in t.platform_connectors
                if p.name == connector
            ),
            None,
        )
        return platform.recording_fetch if platform is not None else None

    async def _start_platform(self, cfg: dict[str, Any], producer: Producer) -> None:
        """Platform Kafka connectors and the feedback relay (see streams/platform/)."""
        s = self.settings
        connectors = [(t.id, p) for t in s.tenants for p in t.platform_connectors if p.enabled]
        if not connectors:
            return
        media = self.media
        if media is None:  # processors off in this process: dead letters still keep raw input
            media = open_media_store(s)
            await asyncio.to_thread(media.start)
        dead = DeadLetters(
            self.codec, self.topics, self.metrics, media, s.kafka.message_max_bytes, self.redactors
        )
        for tenant, conn in connectors:
            inbound = PlatformInbound(
                tenant,
                conn,
                producer=producer,
                codec=self.codec,
                topics=self.topics,
                dead=dead,
                metrics=self.metrics,
                max_record_bytes=s.kafka.message_max_bytes,
                redactors=self.redactors,
            )
            self._stack.append((f"platform connector {tenant}/{conn.name}", inbound.stop))
            await inbound.start()
        if any(conn.feedback_topic for _t, conn in connectors):
            relay = FeedbackRelay(
                connectors,
                {
                    **cfg,
                    "client.id": f"{self.topics.prefix}-platform-feedback",
                    **session_config(s.processors.session_timeout_seconds),
                },
                self.topics,
                self.codec,
                self.state.engine,
                self.metrics,
            )
            self._stack.append(("platform feedback relay", relay.stop))
            await relay.start()

    async def _bundle_connectors(self) -> list[tuple[str, str, RecordingSettings]]:
        """The running connectors that pair recordings with metadata (for the sweeper)."""
        desired = await self.catalog.desired()
        return [
            (e.tenant, e.settings.name, e.settings.recordings)
            for e in desired.values()
            if e.settings.recordings is not None
        ]

    async def stop(self, grace: float | None = None) -> list[str]:
        """Stop every started part, most recent first, within ``grace`` seconds in all
        (default: ``shutdown_grace_seconds``); return the parts abandoned on this call.

        A part may use half of the time left (all of it when it is the last one), less the time
        kept for the managed broker, so a stuck part leaves the parts after it their turn. A part
        still stopping then is abandoned: logged, listed in :attr:`unstopped`, and never awaited
        again, so it cannot hold up the others or the exit. An error while stopping a part is
        logged and the next part is stopped.
        """
        loop = asyncio.get_running_loop()
        budget = self.settings.shutdown_grace_seconds if grace is None else grace
        self._stop_deadline = loop.time() + budget
        reserve = min(10.0, budget / 4) if self.kafka is not None else 0.0
        late: list[str] = []
        while self._stack:
            name, stop = self._stack.pop()
            if name == BROKER:
                left = self._stop_deadline - loop.time() + _BROKER_KILL_SECONDS
            else:
                left = self._stop_deadline - reserve - loop.time()
                if any(other != BROKER for other, _stop in self._stack):
                    left /= 2
            if left <= 0:
                late.append(name)
                continue
            task = asyncio.ensure_future(stop())
            done, _ = await asyncio.wait({task}, timeout=left)
            if not done:
                task.cancel()  # not awaited: it may not end promptly, and we cannot wait
                late.append(name)
            elif not task.cancelled() and (exc := task.exception()) is not None:
                log.error("error while stopping the %s", name, exc_info=exc)
        if late:
            log.error(
                "shutdown: did not stop within %.0fs (shutdown_grace_seconds), abandoned: %s",
                budget,
                ", ".join(late),
            )
        self.unstopped.extend(late)
        return late

    async def _stop_broker(self) -> None:
        """Stop the managed broker in the time left before the stop deadline, then kill it."""
        kafka = self.kafka
        if kafka is None:
            return
        loop = asyncio.get_running_loop()
        timeout = max(0.5, self._stop_deadline - loop.time())
        await loop.run_in_executor(None, kafka.stop, timeout)


def _async(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        await asyncio.get_running_loop().run_in_executor(None, fn)

    return call


async def run_until_stopped(
    service: Service, stop: asyncio.Event, on_started: Callable[[], None] | None = None
) -> None:
    """Start ``service``, call ``on_started`` once it has started, wait for ``stop``, then shut
    it down within its grace period.

    A stop requested while the service is still starting (a broker that does not answer, a
    slow first fetch of the Kafka jars) interrupts the start, which stops what it had started.
    A start failure is raised. Parts that did not stop in time are in ``service.unstopped``.
    """
    starting = asyncio.ensure_future(service.start())
    waiting = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            service.say("stopping ...")
            service.start_interrupted = True
            starting.cancel()  # Service.start stops what it had started, within the grace
            await asyncio.wait({starting}, timeout=service.settings.shutdown_grace_seconds + 5)
            if not starting.done():
                service.unstopped.append("start-up")
            elif not starting.cancelled() and (exc := starting.exception()) is not None:
                raise exc
            return
        starting.result()  # raises a start failure
        if on_started is not None:
            on_started()
        await waiting
    finally:
        waiting.cancel()
    service.say("stopping ...")
    await service.stop()
