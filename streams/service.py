"""Assemble and run every role of callstream in one process (``callstream run``).

Start order: the managed local Kafka broker (only when no ``kafka.bootstrap_servers`` is set),
topics, the connector state database, the producer, the connector runner, the file-outcome
consumer, the HTTP endpoint and, for the local stack, the live echo of events. Stop order is the
reverse. :meth:`Service.start` raises on the first part that cannot start, naming it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from confluent_kafka.admin import AdminClient

from streams.agents import cases as cases_agent
from streams.agents import files as files_agent
from streams.api.app import create_app as create_http_app
from streams.app import create_app
from streams.cases.store import CaseStore, OutboxRelay
from streams.codec import AvroCodec
from streams.demo import seed
from streams.echo import Echo
from streams.embedded.kafka import LocalKafka
from streams.ingest.files import FileProcessor
from streams.kafka import Producer, client_config
from streams.lag import LagMonitor
from streams.media import LocalMediaStore
from streams.metrics import Metrics
from streams.runner import ConnectorRunner, OutcomeConsumer
from streams.settings import Settings
from streams.state import ConnectorState
from streams.topics import Topics, check_record_limit, ensure_topics

log = logging.getLogger(__name__)


class Service:
    """The running process: owns every long-lived part and stops them in reverse order."""

    def __init__(
        self,
        settings: Settings,
        *,
        echo: bool = False,
        metrics: Metrics | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        if settings.demo_enabled:
            settings = seed.with_demo_tenant(settings)
        self.settings = settings
        self.echo_enabled = echo
        self.metrics = metrics or Metrics()
        self.say = say
        self.codec = AvroCodec(settings.schemas_dir)
        self.topics = Topics(settings.kafka.topic_prefix)
        self.kafka: LocalKafka | None = None
        self.http_url: str | None = None
        self._stack: list[Callable[[], Any]] = []

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
        bootstrap = s.kafka.bootstrap_servers
        if bootstrap is None:
            self.say("starting the local Kafka broker (first run fetches its jars with Maven) ...")
            self.kafka = LocalKafka(s.data_dir / "kafka", port=s.kafka.embedded_port)
            kafka = self.kafka
            await loop.run_in_executor(None, kafka.start)
            self._stack.append(lambda: loop.run_in_executor(None, kafka.stop))
            bootstrap = kafka.bootstrap_servers
            self.say(f"local Kafka is up at {bootstrap}")
        cfg = client_config(bootstrap, s.kafka.client_config)
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
        self._stack.append(state.stop)

        producer = Producer(
            {
                **cfg,
                "client.id": f"{self.topics.prefix}-connector-runner",
                "message.max.bytes": s.kafka.message_max_bytes,
            }
        )
        await producer.start()
        self._stack.append(producer.stop)

        if self.echo_enabled:
            echo = Echo(cfg, self.topics, self.codec, self.say)
            await echo.start()
            self._stack.append(echo.stop)

        if s.processors.enabled:
            await self._start_processors(bootstrap, producer)

        self.runner = ConnectorRunner(s, producer, state, self.codec, self.metrics, self.topics)
        await self.runner.start()
        self._stack.append(self.runner.stop)

        outcomes = OutcomeConsumer(self.runner, cfg, f"{self.topics.prefix}.connector-runner")
        await outcomes.start()
        self._stack.append(outcomes.stop)

        app_runner = web.AppRunner(create_http_app(self.metrics, self.runner), access_log=None)
        await app_runner.setup()
        site = web.TCPSite(app_runner, s.http.host, s.http.port)
        await site.start()
        self._stack.append(app_runner.cleanup)
        port = app_runner.addresses[0][1]
        self.http_url = f"http://{s.http.host}:{port}"
        n = len(self.runner.contexts)
        self.say(f"callstream is running: {n} connector(s); metrics at {self.http_url}/metrics")
        if s.demo_enabled:
            self.say(f"demo: drop files into {seed.inbox(s)} to see them announced; Ctrl-C stops")

    async def _start_processors(self, bootstrap: str, producer: Producer) -> None:
        s = self.settings
        cases = CaseStore(s.database_url, self.codec, self.topics, s.profiles_of)
        await cases.start()
        self._stack.append(cases.stop)
        self.cases = cases
        relay = OutboxRelay(cases, producer, metrics=self.metrics)
        await relay.start()
        self._stack.append(relay.stop)
        media = LocalMediaStore(s.data_dir / "media")
        processor = FileProcessor(s, self.codec, self.topics, producer, self.metrics, cases, media)
        self._stack.append(_async(processor.close))
        app = create_app(s, bootstrap, self.topics)
        files_agent.register(
            app, self.topics, self.codec, processor, producer, self.metrics, s.processors
        )
        writer = cases_agent.CaseWriter(cases, producer, processor.dead, self.metrics, s.processors)
        cases_agent.register(
            app, self.topics, self.codec, writer, relay, self.metrics, s.processors
        )
        await app.start()
        self._stack.append(app.stop)
        self.faust_app = app
        lag = LagMonitor(
            client_config(bootstrap, s.kafka.client_config),
            self.metrics,
            {
                app.conf.id: [self.topics.file_arrivals, self.topics.conversations],
                f"{self.topics.prefix}.connector-runner": [self.topics.file_outcomes],
            },
        )
        await lag.start()
        self._stack.append(lag.stop)

    async def stop(self) -> None:
        """Stop every started part, most recent first."""
        while self._stack:
            stop = self._stack.pop()
            try:
                await stop()
            except Exception:  # keep stopping the rest; the error is logged with its traceback
                log.exception("error while stopping")


def _async(fn: Callable[[], None]) -> Callable[[], Any]:
    async def call() -> None:
        await asyncio.get_running_loop().run_in_executor(None, fn)

    return call


async def run_until_stopped(service: Service, stop: asyncio.Event) -> None:
    """Start ``service``, wait for ``stop``, then shut it down."""
    await service.start()
    try:
        await stop.wait()
    finally:
        service.say("stopping ...")
        await service.stop()
