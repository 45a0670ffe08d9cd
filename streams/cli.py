"""The ``callstream`` command line.

``callstream run`` runs every role in one process; ``callstream check-config`` validates the
settings and every Avro schema and exits non-zero naming each bad field; ``callstream db``
migrates the database; ``callstream tenants`` and ``callstream keys`` bootstrap tenants and API
keys without the API; ``callstream kafka`` fetches or runs the local broker used by the embedded
stack and the tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

from streams import logs, security
from streams.codec import AvroCodec
from streams.control.errors import ControlError
from streams.errors import CallstreamError, ConfigError, SchemaError
from streams.settings import ROLES, Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

EXIT_FAILED = 1
"""``run``: the service could not start, or parts of it did not stop within the grace period."""
EXIT_CONFIG = 2
"""Invalid settings or schemas, or Kafka refused ``kafka.client_config``'s credentials."""
WATCHDOG_MARGIN_SECONDS = 5.0
"""How long past ``shutdown_grace_seconds`` the process may take to exit before it is ended."""

log = logging.getLogger("streams.cli")


def _exit_now(code: int, message: str | None = None) -> NoReturn:
    """Exit at once, without waiting for threads that are stuck (they would block a normal exit)."""
    if message:
        log.error("%s", message)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _roles(value: str | None) -> list[str] | None:
    """Parse ``--roles``: known names, comma-separated, at least one."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROLES]
    if unknown or not names:
        raise click.BadParameter(
            f"{', '.join(unknown) or 'nothing given'}: choose from {', '.join(ROLES)}"
        )
    return list(dict.fromkeys(names))


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
@click.option(
    "--roles",
    callback=lambda _ctx, _param, value: _roles(value),
    help="Comma-separated roles this process runs: connectors, processors, api (default: the "
    "roles setting, all three). Run any number of processes against one Kafka and database: "
    "connectors are shared through Kafka's group membership, partitions by consumer group.",
)
@click.pass_obj
def run(config: Path | None, echo: bool | None, roles: list[str] | None) -> None:
    """Run the service (every role, or --roles) until Ctrl-C or SIGTERM.

    A stop signal stops every part within shutdown_grace_seconds; parts that have not stopped
    by then are named and the exit status is 1. A second signal exits at once.
    """
    from streams.embedded.kafka import KafkaStartError
    from streams.gctune import tune_for_throughput
    from streams.service import Service, run_until_stopped  # heavy imports only when running

    settings = _load(config)
    if roles is not None:
        settings = settings.model_copy(update={"roles": roles})
    logs.configure(settings.log_level, settings.log_format)
    if echo is None:
        echo = settings.kafka.bootstrap_servers is None
    grace = settings.shutdown_grace_seconds

    def say(line: str) -> None:
        click.echo(line)

    def fail(code: int, exc: BaseException) -> int:
        click.echo(f"error: {exc}", err=True)
        return code

    try:
        service = Service(settings, echo=echo, say=say)
    except SchemaError as exc:
        sys.exit(fail(EXIT_CONFIG, exc))

    def on_signal(name: str, stop: asyncio.Event) -> None:
        if stop.is_set():
            _exit_now(EXIT_FAILED, f"{name} again: exiting without waiting for the rest to stop")
        stop.set()
        watchdog = threading.Timer(
            grace + WATCHDOG_MARGIN_SECONDS,
            _exit_now,
            (
                EXIT_FAILED,
                f"shutdown: still running {grace + WATCHDOG_MARGIN_SECONDS:.0f}s after "
                f"{name}; exiting",
            ),
        )
        watchdog.daemon = True
        watchdog.start()

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig.name, stop)
        try:
            await run_until_stopped(service, stop, on_started=tune_for_throughput)
            code = 0
        except ConfigError as exc:
            code = fail(EXIT_CONFIG, exc)
        except SchemaError as exc:
            code = fail(EXIT_CONFIG, exc)
        except (CallstreamError, KafkaStartError) as exc:
            code = fail(EXIT_FAILED, exc)
        if service.start_interrupted and not service.unstopped:
            # A start-up call may still block a thread (a broker that does not answer): do not
            # wait for it at exit.
            _exit_now(code)
        if service.unstopped:
            # Abandoned parts may hold threads that would block a normal interpreter exit.
            _exit_now(
                EXIT_FAILED,
                f"stopped with parts still running after {grace:.0f}s: "
                f"{', '.join(service.unstopped)}; their unacknowledged work is redelivered on "
                "the next start",
            )
        return code

    sys.exit(asyncio.run(main()))


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
    click.echo(f"kafka security: {security.describe(settings.kafka.client_config)}")
    db = settings.database.url.split("@")[-1] if settings.database.url else settings.database_url
    click.echo(f"database: {db}")
    media = settings.media
    where = (
        f"s3://{media.bucket}/{media.key_prefix} ({media.endpoint})"
        if media.type == "s3"
        else str(settings.media_root)
    )
    click.echo(f"media store: {where}, recordings up to {media.max_bytes:,} bytes")
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


def _with_engine(config: Path | None, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Open the configured database (migrated to this build), run ``work``, close it."""
    from streams.db import Database

    settings = _load(config)

    async def main() -> T:
        async with Database(settings.database_url) as db:
            return await work(db.engine)

    try:
        return asyncio.run(main())
    except ControlError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)


@cli.group()
def db() -> None:
    """The database holding state, cases and the control plane (Alembic migrations)."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(config: Path | None) -> None:
    """Apply every pending migration (also done at each start)."""
    from streams import migrate
    from streams.db import create_engine

    settings = _load(config)

    async def main() -> tuple[str | None, str | None]:
        engine = create_engine(settings.database_url)
        try:
            return await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    try:
        before, after = asyncio.run(main())
    except CallstreamError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if before == after:
        click.echo(f"database is up to date at revision {after}")
    else:
        click.echo(f"database upgraded from {before or '(empty)'} to {after}")


@db.command("current")
@click.pass_obj
def db_current(config: Path | None) -> None:
    """Print the database's revision and the newest one this build knows."""
    from streams import migrate
    from streams.db import create_engine

    settings = _load(config)

    async def main() -> str | None:
        engine = create_engine(settings.database_url)
        try:
            return await migrate.current(engine)
        finally:
            await engine.dispose()

    click.echo(f"database: {asyncio.run(main()) or '(never migrated)'}; newest: {migrate.head()}")


@cli.group()
def tenants() -> None:
    """Create and list tenants (the operator's bootstrap, without the API)."""


@tenants.command("create")
@click.argument("tenant_id")
@click.option("--name", help="Display name (default: the id).")
@click.pass_obj
def tenants_create(config: Path | None, tenant_id: str, name: str | None) -> None:
    """Create the tenant TENANT_ID."""
    from pydantic import ValidationError

    from streams.control import tenants as ops

    try:
        data = ops.TenantIn(id=tenant_id, name=name or tenant_id)
    except ValidationError as exc:
        click.echo(f"error: invalid tenant: {exc.errors()[0]['msg']}", err=True)
        sys.exit(EXIT_CONFIG)
    tenant = _with_engine(config, lambda engine: ops.create(engine, data, "cli"))
    click.echo(f"created tenant {tenant.id} ({tenant.name})")


@tenants.command("list")
@click.pass_obj
def tenants_list(config: Path | None) -> None:
    """List every tenant with its status."""
    from streams.control import tenants as ops

    async def work(engine: AsyncEngine) -> list[ops.Tenant]:
        async with engine.connect() as conn:
            return await ops.list_all(conn, limit=100_000)

    for t in _with_engine(config, work):
        click.echo(f"{t.id}\t{t.status}\t{t.origin}\t{t.name}")


@cli.group()
def keys() -> None:
    """Create, list and revoke a tenant's API keys."""


@keys.command("create")
@click.option("--tenant", "-t", required=True, help="The tenant the key belongs to.")
@click.option("--name", "-n", required=True, help="What the key is for.")
@click.pass_obj
def keys_create(config: Path | None, tenant: str, name: str) -> None:
    """Create an API key and print it (once: it cannot be shown again)."""
    from streams.control import keys as ops

    key = _with_engine(
        config, lambda engine: ops.create(engine, tenant, ops.ApiKeyIn(name=name), "cli")
    )
    click.echo(
        f"created API key {key.key_id} for tenant {tenant}; store it now, it is not shown again:",
        err=True,
    )
    click.echo(key.key)


@keys.command("list")
@click.option("--tenant", "-t", required=True, help="The tenant whose keys to list.")
@click.pass_obj
def keys_list(config: Path | None, tenant: str) -> None:
    """List a tenant's keys (masked), newest first."""
    from streams.control import keys as ops

    async def work(engine: AsyncEngine) -> list[ops.ApiKey]:
        async with engine.connect() as conn:
            return await ops.list_keys(conn, tenant)

    for k in _with_engine(config, work):
        used = k.last_used_at.isoformat(timespec="minutes") if k.last_used_at else "never used"
        click.echo(f"{k.key_id}\t{k.status}\t{k.masked_key}\t{k.name}\t{used}")


@keys.command("revoke")
@click.option("--tenant", "-t", required=True, help="The tenant the key belongs to.")
@click.argument("key_id")
@click.pass_obj
def keys_revoke(config: Path | None, tenant: str, key_id: str) -> None:
    """Revoke the key KEY_ID: calls with it get 401 from now on."""
    from streams.control import keys as ops

    key = _with_engine(config, lambda engine: ops.revoke(engine, tenant, key_id, "cli"))
    click.echo(f"API key {key.key_id} of tenant {tenant} is {key.status}")


@cli.group()
def connectors() -> None:
    """Connectors kept in the database (created through the API)."""


@connectors.command("re-encrypt")
@click.pass_obj
def connectors_re_encrypt(config: Path | None) -> None:
    """Re-encrypt every stored connector secret (import and export connectors) with the first
    key of api.secret_keys.

    Key rotation: put the new key first in api.secret_keys (keep the old one after it), restart,
    run this, then remove the old key.
    """
    from streams.control import connectors as ops
    from streams.control import destinations
    from streams.control.secrets import SecretBox, SecretsError

    settings = _load(config)
    box = SecretBox.from_settings(settings.api.secret_keys, settings.data_dir)

    async def both(engine: AsyncEngine) -> int:
        return await ops.re_encrypt(engine, box) + await destinations.re_encrypt(engine, box)

    try:
        count = _with_engine(config, both)
    except SecretsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"re-encrypted the secrets of {count} connector(s) with the first key")


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
