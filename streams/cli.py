"""The ``callstream`` command line.

``callstream run`` runs every role in one process; ``callstream check-config`` validates the
settings and every Avro schema and exits non-zero naming each bad field; ``callstream kafka``
fetches or runs the local broker used by the embedded stack and the tests.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from streams import logs
from streams.codec import AvroCodec
from streams.errors import ConfigError, SchemaError
from streams.settings import Settings, load_settings

EXIT_CONFIG = 2


def _load(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="CALLSTREAM_CONFIG",
    help="YAML config file (env: CALLSTREAM_CONFIG). Env vars CALLSTREAM_<SECTION>__<FIELD> "
    "override it. Without one: embedded defaults (local Kafka, SQLite, demo tenant).",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """callstream: contact-centre conversation ingestion over Kafka."""
    ctx.obj = config


@cli.command()
@click.option(
    "--echo/--no-echo",
    default=None,
    help="Print events as they flow (default: on when running the embedded local stack).",
)
@click.pass_obj
def run(config: Path | None, echo: bool | None) -> None:
    """Run every role (connector runner, HTTP /metrics) until Ctrl-C or SIGTERM."""
    from streams.service import Service, run_until_stopped  # heavy imports only when running

    settings = _load(config)
    logs.configure(settings.log_level, settings.log_format)
    if echo is None:
        echo = settings.kafka.bootstrap_servers is None

    def say(line: str) -> None:
        click.echo(line)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_until_stopped(Service(settings, echo=echo, say=say), stop)

    try:
        asyncio.run(main())
    except SchemaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


@cli.command("check-config")
@click.pass_obj
def check_config(config: Path | None) -> None:
    """Validate the settings and every Avro schema; exit 2 naming each bad field."""
    settings = _load(config)
    try:
        codec = AvroCodec(settings.schemas_dir)
    except SchemaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    click.echo(f"schemas: {len(codec.names)} valid in {settings.schemas_dir}")
    kafka = settings.kafka.bootstrap_servers or "embedded local broker"
    click.echo(f"kafka: {kafka} (topic prefix {settings.kafka.topic_prefix!r})")
    db = settings.database.url.split("@")[-1] if settings.database.url else settings.database_url
    click.echo(f"database: {db}")
    for tenant in settings.tenants:
        for profile in tenant.profiles:
            click.echo(
                f"profile {tenant.id}/{profile.id} v{profile.version}: "
                f"{len(profile.parameters)} parameters"
            )
        for conn in tenant.connectors:
            state = "enabled" if conn.enabled else "disabled"
            click.echo(f"connector {tenant.id}/{conn.name}: {conn.store.type}, {state}")
    if settings.demo_enabled:
        click.echo("demo tenant: on (no tenants configured)")
    click.echo("configuration is valid")


@cli.group()
def kafka() -> None:
    """The local Apache Kafka broker of the embedded stack and the tests."""


@kafka.command("fetch")
def kafka_fetch() -> None:
    """Download the Kafka jars with Maven into the cache (no-op when cached)."""
    from streams.embedded import kafka as embedded

    sys.exit(embedded.main(["fetch"]))


@kafka.command("run")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Broker storage; reused on restart.",
)
@click.option("--port", type=int, default=None, help="Listener port (default: free or saved).")
def kafka_run(data_dir: Path, port: int | None) -> None:
    """Run a single-node KRaft broker until Ctrl-C."""
    from streams.embedded import kafka as embedded

    argv = ["run", "--data-dir", str(data_dir)] + (["--port", str(port)] if port else [])
    sys.exit(embedded.main(argv))


def main() -> None:
    """Entry point of the installed ``callstream`` command."""
    cli(prog_name="callstream")
