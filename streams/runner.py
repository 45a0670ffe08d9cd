"""The connector runner: poll every connector, publish FileArrival events, apply clean-up.

Each enabled connector runs as its own asyncio task with its own single-thread executor, so its
blocking store (paramiko, boto3, the file system) never blocks the event loop and never slows
another connector. One poll cycle:

1. ``Poller.poll`` lists the store and returns complete, not yet announced versions;
2. they are published in batches to ``<prefix>.file-arrivals.v1``, or to
   ``<prefix>.file-arrivals-bulk.v1`` for a file of at least ``processors.bulk_file_bytes``
   (:mod:`streams.topics` lanes; idempotent producer, key ``<tenant>/<connector>/<path>``) and,
   once Kafka acknowledged a batch,
3. recorded in :class:`~streams.state.ConnectorState` and marked announced in the poller.

A crash between 2 and 3 re-announces that batch after restart (same ``file_id``); nothing is lost.
Any failure (unreachable host, wrong password, changed host key, Kafka or database down) is
logged with what was being done, counted in ``callstream_connector_poll_errors_total`` and
retried with exponential back-off for that connector alone.

:class:`OutcomeConsumer` reads ``<prefix>.file-outcomes.v1``, records each verdict durably in
:class:`~streams.state.ConnectorState` (then commits its offsets) and hands it to the connector.
It never touches a store, so a slow or unreachable store never holds up other outcomes. The
connector's own poll cycle then takes the clean-up steps that are due (see
:mod:`connectors.poller`) in its own thread and records each one; after a restart the recorded
state resumes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from sqlalchemy.exc import SQLAlchemyError

from connectors import paths
from connectors.base import FileStore, RemoteFile, SkipReason
from connectors.errors import ConnectorError
from connectors.netguard import AddressGuard
from connectors.poller import Candidate, CleanupAction, CleanupStep, Outcome, Poller
from connectors.registry import open_store as build_store
from streams.codec import AvroCodec
from streams.control.catalog import CONFIG_REVISION, Catalog, Entry
from streams.errors import PublishError, SchemaError
from streams.kafka import Producer, Record, session_config
from streams.metrics import Metrics
from streams.ownership import ConnectorMoved, Ownership, Placement, worker_name
from streams.settings import ConnectorSettings, Settings, StoreConfig
from streams.state import ConnectorState, OutcomeRecord
from streams.tasks import cancel_and_wait
from streams.topics import Topics, lane_of

log = logging.getLogger(__name__)

T = TypeVar("T")

FILE_ARRIVAL = "callstream.FileArrival"
FILE_OUTCOME = "callstream.FileOutcome"

_NOTABLE_SKIPS = {SkipReason.SYMLINK, SkipReason.SPECIAL_FILE, SkipReason.UNSAFE_NAME}


def open_store(config: StoreConfig, guard: AddressGuard | None = None) -> FileStore:
    """Build the file store a connector's configuration describes (see connectors.registry);
    with ``guard``, it connects only to addresses the guard allows (API-created connectors)."""
    return build_store(config, guard)


def guard_for(settings: Settings, from_api: bool) -> AddressGuard | None:
    """The SSRF guard of a connector: API-created ones get ``api.connect_allow``'s, config-file
    ones (the operator's) none."""
    return AddressGuard(settings.api.connect_allow) if from_api else None


def file_key(tenant: str, connector: str, path: str) -> str:
    """Return the Kafka key of a file's events."""
    return f"{tenant}/{connector}/{path}"


def file_id(tenant: str, connector: str, path: str, version_id: str) -> str:
    """Return the deterministic id of one file version."""
    raw = "\x00".join((tenant, connector, path, version_id)).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


class ConnectorNotRunning(RuntimeError):
    """A job's run names a connector this runner does not run."""


@dataclass
class ConnectorStatus:
    """What an operator sees for one connector (``/connectors``)."""

    state: str = "starting"
    last_error: str | None = None
    last_error_kind: str | None = None
    last_success: dt.datetime | None = None
    consecutive_failures: int = 0
    announced_total: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Serialise for JSON."""
        return {
            "state": self.state,
            "last_error": self.last_error,
            "last_error_kind": self.last_error_kind,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "consecutive_failures": self.consecutive_failures,
            "announced_total": self.announced_total,
        }


@dataclass(frozen=True, slots=True)
class OutcomeNotice:
    """A verdict recorded durably, waiting for the connector's poll cycle to note it."""

    path: str
    version_id: str
    outcome: Outcome
    decided_at: float


@dataclass
class ConnectorContext:
    """Everything the runner keeps for one connector.

    ``outcomes`` and ``announcing`` are touched only from the event loop.
    """

    tenant: str
    settings: ConnectorSettings
    store: FileStore
    poller: Poller
    executor: ThreadPoolExecutor
    status: ConnectorStatus = field(default_factory=ConnectorStatus)
    connected: bool = False
    reported_skips: set[str] = field(default_factory=set)
    outcomes: list[OutcomeNotice] = field(default_factory=list)
    announcing: dict[str, asyncio.Event] = field(default_factory=dict)
    revision: str = CONFIG_REVISION
    task: asyncio.Task[None] | None = None
    connector_id: str = ""
    scheduled: bool = False
    """A data_import job drives it: poll cycles only watch and clean up; runs announce."""
    cycle: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by a poll cycle, so a job's run and the regular cycle never overlap."""
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by :meth:`ConnectorRunner.wake`: the next cycle starts without waiting."""
    completed: list[RemoteFile] = field(default_factory=list)
    """Versions their writer reported complete, noted by the next cycle."""
    stopped: bool = False
    """Set when this runner stops the connector: a job's run in progress ends after its batch."""

    @property
    def name(self) -> str:
        """The connector's name."""
        return self.settings.name

    @property
    def labels(self) -> dict[str, str]:
        """Metric labels."""
        return {"tenant": self.tenant, "connector": self.name}

    def _connected_call(self, fn: Callable[..., T], *args: Any) -> T:
        if not self.connected:
            self.store.connect()
            self.connected = True
        return fn(*args)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store operation in this connector's thread, connecting first if needed."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._connected_call, fn, *args)

    async def local(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a poller call that needs no store in this connector's thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def disconnect(self) -> None:
        """Drop the session so the next call reconnects."""
        self.connected = False
        await asyncio.get_running_loop().run_in_executor(self.executor, self.store.close)


class Backoff:
    """Exponential back-off with a ceiling."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = min(initial, maximum), maximum
        self.current = self.initial

    def next(self) -> float:
        """Return the delay to wait now and double the next one."""
        delay, self.current = self.current, min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay."""
        self.current = self.initial


class ConnectorRunner:
    """Runs every enabled connector of every tenant (see the module doc).

    With a dynamic :class:`~streams.control.catalog.Catalog` (connectors in the database too),
    a reconcile step every ``runner.reconcile_interval_seconds`` starts the connectors that
    appeared, restarts those whose revision changed and stops those deleted, disabled or whose
    tenant was disabled. Stopping one cancels its task, closes its store and shuts its thread;
    its durable state stays, so starting it again resumes where it was.

    With an :class:`~streams.ownership.Ownership`, the runner runs only the connectors this
    worker owns (see :mod:`streams.ownership`); an assignment change reconciles at once
    (:meth:`apply_ownership`), and the reconcile loop runs whatever the catalog.
    """

    def __init__(
        self,
        settings: Settings,
        producer: Producer,
        state: ConnectorState,
        codec: AvroCodec,
        metrics: Metrics,
        topics: Topics,
        catalog: Catalog | None = None,
        ownership: Ownership | None = None,
        worker: str | None = None,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.state = state
        self.codec = codec
        self.metrics = metrics
        self.topics = topics
        self.catalog = catalog or Catalog(settings)
        self.ownership = ownership
        self.worker = worker or worker_name()
        """This process's name in the health it reports (:mod:`streams.connector_health`)."""
        self.contexts: dict[tuple[str, str], ConnectorContext] = {}
        self._reconciler: asyncio.Task[None] | None = None
        self._reconciling = asyncio.Lock()
        self._stopping = asyncio.Event()

    def statuses(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(tenant, name, status fields)`` of every connector this runner runs right now."""
        return [(c.tenant, c.name, dataclasses.asdict(c.status)) for c in self.contexts.values()]

    def owns(self, key: tuple[str, str]) -> bool:
        """Tell whether this worker runs the connector ``(tenant, name)`` when it is wanted."""
        return self.ownership is None or self.ownership.owns(*key)

    async def start(self) -> None:
        """Load each connector's durable state and start its polling task (and, with a dynamic
        catalog, the reconcile loop)."""
        for tenant in self.settings.tenants:
            for conn in tenant.connectors:
                if not conn.enabled:
                    log.info("connector %s/%s is disabled", tenant.id, conn.name)
        await self.reconcile()
        if self.catalog.dynamic or self.ownership is not None:
            self._reconciler = asyncio.create_task(self._reconcile_loop(), name="reconcile")

    async def apply_ownership(self) -> None:
        """The assignment changed: stop the connectors no longer owned at once (no database
        needed), then start the newly owned ones (retried by the reconcile loop on failure)."""
        async with self._reconciling:
            revoked = [k for k in self.contexts if not self.owns(k)]
            for key in revoked:  # every revoked connector stops polling now, however slowly
                why = "the runner stops" if self._stopping.is_set() else "moved to another worker"
                log.info("connector %s/%s: %s, stopping it", *key, why)
                self._halt(self.contexts[key])
            for key in revoked:  # its store then closes (after a store call in flight)
                await self._stop_connector(key)
        if self._stopping.is_set():
            return
        try:
            await self.reconcile()
        except SQLAlchemyError as exc:
            log.error("connector catalog: reading the connectors failed: %s; retrying", exc)

    async def reconcile(self) -> None:
        """Make the running connectors those the catalog wants and this worker owns."""
        async with self._reconciling:
            await self._reconcile()

    async def _reconcile(self) -> None:
        wanted = await self.catalog.desired()
        desired = {k: e for k, e in wanted.items() if self.owns(k)}
        for key, ctx in list(self.contexts.items()):
            want = desired.get(key)
            if want is None or want.revision != ctx.revision:
                why = "removed or disabled" if want is None else "changed"
                log.info("connector %s/%s: %s, stopping it", ctx.tenant, ctx.name, why)
                await self._stop_connector(key)
            elif want.scheduled != ctx.scheduled:
                ctx.scheduled = want.scheduled
                log.info(
                    "connector %s/%s: %s",
                    ctx.tenant,
                    ctx.name,
                    "announces at its job's runs"
                    if want.scheduled
                    else "no job drives it any more: announcing files as they arrive",
                )
        for key, entry in desired.items():
            if key not in self.contexts and not self._stopping.is_set():
                await self._start_connector(entry)

    async def _reconcile_loop(self) -> None:
        interval = self.settings.runner.reconcile_interval_seconds
        reported = 0.0
        while not self._stopping.is_set():
            await self._sleep(interval)
            if self._stopping.is_set():
                return
            try:
                await self.reconcile()
            except SQLAlchemyError as exc:  # the database is down: keep what runs, retry
                if time.monotonic() - reported >= 60:
                    reported = time.monotonic()
                    log.error("connector catalog: reading the connectors failed: %s", exc)

    async def _start_connector(self, entry: Entry) -> None:
        tenant, conn = entry.tenant, entry.settings
        known = await self.state.load_known(tenant, conn.name)
        store = open_store(conn.store, guard_for(self.settings, entry.from_api))
        ctx = ConnectorContext(
            tenant=tenant,
            settings=conn,
            store=store,
            poller=Poller(store, conn.poll, known),
            executor=ThreadPoolExecutor(1, thread_name_prefix=f"conn-{conn.name}"),
            revision=entry.revision,
            connector_id=entry.connector_id,
            scheduled=entry.scheduled,
        )
        self.contexts[entry.key] = ctx
        log.info(
            "connector %s/%s: polling %s every %gs (%d versions already announced)",
            tenant,
            conn.name,
            store.description,
            conn.poll.interval_seconds,
            len(known),
        )
        ctx.task = asyncio.create_task(self._run(ctx), name=f"poll-{tenant}-{conn.name}")

    @staticmethod
    def _halt(ctx: ConnectorContext) -> None:
        """Stop a connector's polling at once: no further cycle starts, a job's run ends after
        its current batch (:class:`ConnectorMoved`)."""
        ctx.stopped = True
        if ctx.task is not None:
            ctx.task.cancel()

    async def _stop_connector(self, key: tuple[str, str]) -> None:
        """Halt a connector, wait for a job's batch in flight, then close its store."""
        ctx = self.contexts.pop(key)
        self._halt(ctx)
        if ctx.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await ctx.task
        async with ctx.cycle:
            await ctx.disconnect()
        await asyncio.to_thread(ctx.executor.shutdown, True)

    async def stop(self) -> None:
        """Stop polling, wait for the current cycle to end, close every store."""
        self._stopping.set()
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        for ctx in self.contexts.values():  # every cycle ends at once, not one after another
            self._halt(ctx)
        for key in list(self.contexts):
            await self._stop_connector(key)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self, ctx: ConnectorContext) -> None:
        backoff = Backoff(
            self.settings.runner.backoff_initial_seconds, self.settings.runner.backoff_max_seconds
        )
        while not self._stopping.is_set():
            try:
                async with ctx.cycle:
                    await self.poll_once(ctx)
            except ConnectorError as exc:
                await self._failed(ctx, exc.kind, str(exc), backoff)
                await ctx.disconnect()
                continue
            except PublishError as exc:
                await self._failed(ctx, "kafka", f"publishing file arrivals: {exc}", backoff)
                continue
            except SQLAlchemyError as exc:
                await self._failed(ctx, "database", f"recording connector state: {exc}", backoff)
                continue
            except Exception as exc:  # a connector must never die silently: log, count, retry
                log.exception("connector %s/%s: unexpected error", ctx.tenant, ctx.name)
                await self._failed(ctx, "internal", repr(exc), backoff)
                await ctx.disconnect()
                continue
            backoff.reset()
            await self._pause(ctx, ctx.settings.poll.interval_seconds)

    async def _pause(self, ctx: ConnectorContext, seconds: float) -> None:
        """Wait ``seconds`` between cycles, less if the runner stops or the connector is woken."""
        waits = [
            asyncio.ensure_future(self._stopping.wait()),
            asyncio.ensure_future(ctx.woken.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        ctx.woken.clear()

    def wake(self, tenant: str, connector: str, complete: RemoteFile | None = None) -> bool:
        """Have a connector poll now instead of at its next interval; with ``complete``, that
        version counts as complete without the age and stability checks (its writer closed it:
        :meth:`~connectors.poller.Poller.note_complete`). Return False when this runner does
        not run the connector (the file is then found by whichever runs it, at its pace)."""
        ctx = self.contexts.get((tenant, connector))
        if ctx is None:
            return False
        if complete is not None:
            ctx.completed.append(complete)
        ctx.woken.set()
        return True

    async def _failed(self, ctx: ConnectorContext, kind: str, message: str, b: Backoff) -> None:
        delay = b.next()
        st = ctx.status
        st.state, st.last_error, st.last_error_kind = "error", message, kind
        st.consecutive_failures += 1
        self.metrics.poll_errors.labels(**ctx.labels, kind=kind).inc()
        log.error(
            "connector %s/%s failed (%s): %s; retrying in %.1fs",
            ctx.tenant,
            ctx.name,
            kind,
            message,
            delay,
        )
        await self._sleep(delay)

    async def poll_once(self, ctx: ConnectorContext, announce: bool | None = None) -> int:
        """Run one poll cycle for ``ctx``; return how many versions were announced.

        The cycle notes the verdicts recorded since the last one, polls and announces (unless
        ``announce`` is False, or None and a job drives the connector: then it only watches
        files settle), then takes the clean-up steps that are due.
        """
        return len(await self._cycle(ctx, not ctx.scheduled if announce is None else announce))

    async def placement(self, tenant: str, connector_id: str) -> Placement:
        """Where ``tenant``'s connector ``connector_id`` runs: ``here``; ``elsewhere`` when it
        is wanted but not running here (another worker owns it, or it is starting here);
        ``nowhere`` when it is not wanted (deleted, disabled, its tenant disabled)."""
        if any(
            c.tenant == tenant and c.connector_id == connector_id for c in self.contexts.values()
        ):
            return "here"
        desired = await self.catalog.desired()
        wanted = any(
            e.tenant == tenant and e.connector_id == connector_id for e in desired.values()
        )
        return "elsewhere" if wanted else "nowhere"

    async def run_import(self, tenant: str, connector_id: str) -> list[tuple[str, str, str]]:
        """A job's import run: announce every complete, not yet announced version of the
        connector now; return their (file_id, connector name, path).

        Raises :class:`ConnectorNotRunning` when this runner does not run that connector
        (disabled, its tenant disabled, or it cannot be loaded), :class:`ConnectorMoved` when the
        connector stops here during the run (between two batches: nothing is half-announced),
        and whatever the store raises when it cannot be reached
        (:class:`~connectors.errors.ConnectorError`).
        """
        ctx = next(
            (
                c
                for c in self.contexts.values()
                if c.tenant == tenant and c.connector_id == connector_id
            ),
            None,
        )
        if ctx is None:
            raise ConnectorNotRunning(
                f"connector {connector_id} is not running (disabled, its tenant is disabled, "
                "or its configuration cannot be loaded)"
            )
        out: list[tuple[str, str, str]] = []
        async with ctx.cycle:
            try:
                while True:
                    if ctx.stopped:
                        raise ConnectorMoved(out)
                    batch = await self._cycle(ctx, True)
                    out += [(fid, ctx.name, path) for fid, path in batch]
                    if len(batch) < ctx.settings.poll.max_announce_per_poll:
                        return out
            except ConnectorError:
                await ctx.disconnect()  # the next call reconnects
                raise

    async def _cycle(self, ctx: ConnectorContext, announce: bool) -> list[tuple[str, str]]:
        await self._note_outcomes(ctx)
        completed, ctx.completed = ctx.completed, []
        for f in completed:
            await ctx.local(ctx.poller.note_complete, f)
        started = time.perf_counter()
        result = await ctx.call(ctx.poller.poll)
        self.metrics.poll_duration.labels(**ctx.labels).observe(time.perf_counter() - started)
        self.metrics.files_listed.labels(**ctx.labels).inc(result.listed)
        for reason, n in result.skipped.items():
            self.metrics.files_skipped.labels(**ctx.labels, reason=str(reason)).inc(n)
        for entry in result.skipped_entries:
            if entry.reason in _NOTABLE_SKIPS and entry.path not in ctx.reported_skips:
                ctx.reported_skips.add(entry.path)
                log.warning(
                    "connector %s/%s: skipping %r: %s (%s)",
                    ctx.tenant,
                    ctx.name,
                    entry.path,
                    entry.reason,
                    entry.detail,
                )
        announced: list[tuple[str, str]] = []
        size = self.settings.runner.announce_batch_size
        ready = result.ready if announce else []
        for i in range(0, len(ready), size):
            announced += await self._announce(ctx, ready[i : i + size])
        await self._clean_up(ctx)
        st = ctx.status
        st.state, st.last_success, st.consecutive_failures = "ok", utcnow(), 0
        st.last_error = st.last_error_kind = None
        self.metrics.last_success.labels(**ctx.labels).set(time.time())
        if announced or result.pending:
            log.info(
                "connector %s/%s: listed %d, announced %d, waiting on %d incomplete",
                ctx.tenant,
                ctx.name,
                result.listed,
                len(announced),
                result.pending,
            )
        return announced

    async def _note_outcomes(self, ctx: ConnectorContext) -> None:
        notices, ctx.outcomes = ctx.outcomes, []
        for n in notices:
            action = await ctx.local(
                ctx.poller.note_outcome, n.path, n.version_id, n.outcome, n.decided_at
            )
            if action is not None:
                self.metrics.cleanups.labels(**ctx.labels, action=str(action)).inc()

    async def _clean_up(self, ctx: ConnectorContext) -> None:
        """Take the due clean-up steps, recording each before the next."""
        for path in await ctx.local(ctx.poller.due_cleanups):
            step: CleanupStep | None = await ctx.call(ctx.poller.cleanup_step, path)
            if step is None:
                continue
            await self.state.record_cleanup(ctx.tenant, ctx.name, step)
            self.metrics.cleanups.labels(**ctx.labels, action=str(step.action)).inc()
            log.info("connector %s/%s: %s %r", ctx.tenant, ctx.name, step.action, path)

    async def _announce(
        self, ctx: ConnectorContext, batch: Sequence[Candidate]
    ) -> list[tuple[str, str]]:
        for c in batch:
            ctx.announcing.setdefault(c.file.version_id, asyncio.Event())
        try:
            return await self._publish_and_record(ctx, batch)
        finally:
            for c in batch:
                event = ctx.announcing.pop(c.file.version_id, None)
                if event is not None:
                    event.set()

    async def _publish_and_record(
        self, ctx: ConnectorContext, batch: Sequence[Candidate]
    ) -> list[tuple[str, str]]:
        """Publish ``batch``, record it, mark it announced; return its (file_id, path)."""
        now = utcnow()
        records: list[Record] = []
        ids: list[tuple[Candidate, str]] = []
        store_type = ctx.settings.store.type
        for c in batch:
            fid = file_id(ctx.tenant, ctx.name, c.file.path, c.file.version_id)
            event = {
                "file_id": fid,
                "tenant": ctx.tenant,
                "connector": ctx.name,
                "store_type": store_type,
                "store_uri": ctx.store.description,
                "path": c.file.path,
                "size": c.file.size,
                "mtime": dt.datetime.fromtimestamp(c.file.mtime, dt.UTC),
                "checksum": c.file.etag,
                "version": c.version,
                "version_id": c.file.version_id,
                "announced_at": now,
            }
            key = file_key(ctx.tenant, ctx.name, c.file.path).encode()
            lane = lane_of(c.file.size, self.settings.processors.bulk_file_bytes)
            topic = self.topics.in_lane(lane).file_arrivals
            records.append((topic, key, self.codec.encode(FILE_ARRIVAL, event)))
            ids.append((c, fid))
        await self.producer.send_batch(records)
        await self.state.record_announced(ctx.tenant, ctx.name, ids, now)
        await ctx.local(ctx.poller.mark_announced, batch)
        self.metrics.files_announced.labels(**ctx.labels).inc(len(batch))
        ctx.status.announced_total += len(batch)
        return [(fid, c.file.path) for c, fid in ids]


class OutcomeConsumer:
    """Applies clean-up policies as downstream reports file outcomes (see the module doc).

    With an :class:`~streams.ownership.Ownership`, its group membership also decides which
    connectors the runner runs: the rebalance callbacks record the assigned partitions and have
    the runner apply them before the rebalance completes (see :mod:`streams.ownership`).

    Failures: when the database fails while outcomes are applied, the consumer stays in the
    group (leaving would move every connector of this worker to others) and rewinds to the
    committed offsets, then applies them again after a backoff (recording a verdict twice is a
    no-op). A Kafka error closes the consumer and subscribes again from the committed offsets.
    """

    def __init__(
        self,
        runner: ConnectorRunner,
        client_config: dict[str, Any],
        group_id: str,
        ownership: Ownership | None = None,
    ) -> None:
        self.runner = runner
        self.ownership = ownership
        timeout = runner.settings.processors.session_timeout_seconds
        self._config = {
            **client_config,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **session_config(timeout),
            "partition.assignment.strategy": "cooperative-sticky",
        }
        self._handover_timeout = max(30.0, 3 * timeout)
        self._consumer: Consumer | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="outcomes")
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Subscribe and start consuming (the first poll joins the group)."""
        self._loop = asyncio.get_running_loop()
        self._consumer = await self._loop.run_in_executor(self._executor, self._subscribe)
        self._task = asyncio.create_task(self._loop_forever(), name="file-outcomes")

    def _subscribe(self) -> Consumer:
        consumer = Consumer(self._config)
        topic = self.runner.topics.file_outcomes
        if self.ownership is None:
            consumer.subscribe([topic])
        else:
            consumer.subscribe(
                [topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
        return consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Consumer thread: take the new partitions' connectors (after loading their state)."""
        assert self.ownership is not None  # noqa: S101 - only subscribed with callbacks then
        topic = self.runner.topics.file_outcomes
        count = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        self.ownership.add(count, {p.partition for p in partitions})
        log.info(
            "connector group: assigned partitions %s of %d",
            sorted(self.ownership.assigned),
            count,
        )
        self._hand_over()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Consumer thread: stop the revoked (or lost) partitions' connectors before the
        rebalance completes, so no other worker polls them while this one still does."""
        assert self.ownership is not None  # noqa: S101 - only subscribed with callbacks then
        self.ownership.remove({p.partition for p in partitions})
        if partitions:
            log.info("connector group: partitions %s revoked", [p.partition for p in partitions])
        self._hand_over()

    def _hand_over(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self.runner.apply_ownership(), loop)
        try:
            future.result(self._handover_timeout)
        except Exception:  # a stuck or failed stop: log it, never break the consumer thread
            log.exception("connector group: applying the new assignment failed")

    async def stop(self) -> None:
        """Stop consuming and leave the group (its connectors stop first); outcomes not yet
        applied are redelivered on the next start."""
        self._stopping.set()
        await cancel_and_wait(self._task)
        if self._consumer is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._consumer.close)
        self._executor.shutdown(wait=True)

    async def _loop_forever(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.runner.settings.runner
        backoff = Backoff(settings.backoff_initial_seconds, settings.backoff_max_seconds)
        while not self._stopping.is_set():
            consumer = self._consumer
            assert consumer is not None  # noqa: S101 - set in start() and below
            try:
                await self._consume_once(consumer)
                backoff.reset()
            except SQLAlchemyError as exc:
                delay = backoff.next()
                log.error("file-outcomes: the database failed: %s; again in %.1fs", exc, delay)
                try:
                    await loop.run_in_executor(self._executor, self._rewind, consumer)
                except KafkaException as kafka_exc:
                    log.error("file-outcomes consumer: rewinding failed: %s", kafka_exc)
                    await self._restart(consumer, delay)
                    continue
                await asyncio.sleep(delay)
            except KafkaException as exc:
                # Start over from the committed offsets: nothing unapplied is skipped.
                delay = backoff.next()
                log.error("file-outcomes consumer: %s; restarting in %.1fs", exc, delay)
                await self._restart(consumer, delay)

    async def _restart(self, consumer: Consumer, delay: float) -> None:
        """Close ``consumer`` (leaving the group), wait ``delay`` seconds, subscribe again."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, consumer.close)
        self._consumer = None
        await asyncio.sleep(delay)
        self._consumer = await loop.run_in_executor(self._executor, self._subscribe)

    @staticmethod
    def _rewind(consumer: Consumer) -> None:
        """Seek every assigned partition back to its committed offset (the beginning when none
        was committed), so the outcomes not yet committed are consumed again."""
        assigned = consumer.assignment()
        if not assigned:
            return
        for tp in consumer.committed(assigned, timeout=10):
            if tp.offset < 0:
                tp.offset = OFFSET_BEGINNING
            consumer.seek(tp)

    async def _consume_once(self, consumer: Consumer) -> None:
        loop = asyncio.get_running_loop()
        msgs = await loop.run_in_executor(self._executor, consumer.consume, 200, 0.5)
        applied = 0
        for msg in msgs:
            if msg.error() is not None:
                log.warning("file-outcomes consumer: %s", msg.error())
                continue
            await self._apply(msg.value())
            applied += 1
        if applied:
            await loop.run_in_executor(self._executor, self._commit, consumer)

    @staticmethod
    def _commit(consumer: Consumer) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise

    async def _apply(self, value: bytes | None) -> None:
        """Record one verdict durably and hand it to its connector (no store call here)."""
        runner = self.runner
        try:
            outcome = runner.codec.decode(FILE_OUTCOME, value or b"")
        except SchemaError as exc:
            log.error("file-outcomes: undecodable record skipped: %s", exc)
            return
        tenant, connector = outcome["tenant"], outcome["connector"]
        try:
            path = paths.normalize(outcome["path"])
        except ConnectorError as exc:
            log.error("file-outcomes: %s/%s: %s; skipped", tenant, connector, exc)
            return
        kind = Outcome(outcome["outcome"])
        version_id, decided_at = outcome["version_id"], outcome["decided_at"]
        record = await runner.state.record_outcome(
            tenant, connector, path, version_id, kind, decided_at
        )
        ctx = runner.contexts.get((tenant, connector))
        if ctx is None:
            # Stopped, being restarted after a change, or gone: a recorded verdict is applied
            # from the durable state when the connector starts again.
            log.info(
                "file-outcomes: connector %s/%s is not running; %s outcome for %r %s",
                tenant,
                connector,
                kind,
                outcome["path"],
                "recorded for its next start" if record == OutcomeRecord.RECORDED else "skipped",
            )
            return
        if record == OutcomeRecord.NOT_CURRENT and version_id in ctx.announcing:
            # Processed before the announcement was recorded: wait for it, then try again.
            await ctx.announcing[version_id].wait()
            record = await runner.state.record_outcome(
                tenant, connector, path, version_id, kind, decided_at
            )
        ctx = runner.contexts.get((tenant, connector)) or ctx  # restarted meanwhile: the new one
        if record == OutcomeRecord.RECORDED:
            ctx.outcomes.append(OutcomeNotice(path, version_id, kind, decided_at.timestamp()))
        elif record == OutcomeRecord.NOT_CURRENT:
            runner.metrics.cleanups.labels(**ctx.labels, action=str(CleanupAction.SUPERSEDED)).inc()
            log.info(
                "connector %s/%s: %s outcome for an older version of %r; nothing to clean up",
                tenant,
                connector,
                kind,
                path,
            )
