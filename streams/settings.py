"""Settings: one frozen root, nested sections, from a YAML file and ``CALLSTREAM_*`` env vars.

Precedence (highest first): environment (``CALLSTREAM_<SECTION>__<FIELD>``, e.g.
``CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS``), the YAML config file (``--config`` or
``CALLSTREAM_CONFIG``; parsed with ``yaml.safe_load``), defaults. The defaults are the embedded
local stack: a Kafka broker callstream starts itself, SQLite and folders under ``data_dir``, and
a demo tenant with a local-folder connector when no tenant is configured.

Each connector's own model sits next to it (``SftpConfig`` in :mod:`connectors.sftp`); secrets
are ``SecretStr`` and are never printed. :func:`load_settings` raises
:class:`~streams.errors.ConfigError` whose lines name the field path.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import yaml
from cryptography.fernet import Fernet
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from connectors.local import LocalConfig
from connectors.poller import PollConfig
from connectors.s3 import S3Config
from connectors.sftp import SftpConfig
from streams import security
from streams.analysis.profiles import Profile
from streams.codec import DEFAULT_SCHEMAS_DIR
from streams.errors import ConfigError
from streams.expected import ExpectFile
from streams.fetch.settings import RecordingFetchSettings
from streams.ingest.parse import ParseSettings
from streams.ingest.recordings import RecordingSettings
from streams.media import DEFAULT_MAX_MEDIA_BYTES, MAX_MEDIA_BYTES
from streams.platform.settings import PlatformConnectorSettings
from streams.redact import RedactionSettings
from streams.voice.settings import TranscriptionSettings

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]

StoreConfig = Annotated[SftpConfig | LocalConfig | S3Config, Field(discriminator="type")]
"""Every store type's config model (the ones connectors.registry knows), told apart by ``type``."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """Where Kafka is and how callstream talks to it."""

    bootstrap_servers: str | None = Field(
        None,
        description="Broker list. Unset: start and manage a local broker under data_dir/kafka.",
        examples=["kafka-1:9092,kafka-2:9092"],
    )
    topic_prefix: str = Field("callstream", description="Prefix of every topic name.")
    partitions: int = Field(6, ge=1, description="Partitions for topics callstream creates.")
    replication_factor: int = Field(1, ge=1, description="Replication for topics it creates.")
    client_config: dict[str, str] = Field(
        default_factory=dict,
        repr=False,  # may hold sasl.password / ssl.key.password
        description="Extra client properties in librdkafka's names. The security ones "
        "(security.protocol, sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, "
        "ssl.certificate.location, ssl.key.location, ssl.key.password, "
        "ssl.endpoint.identification.algorithm) reach every Kafka client, the stream "
        "processors included; other security properties are refused; the rest go to the "
        "librdkafka clients only. See streams/security.py.",
        examples=[
            {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "callstream",
                "sasl.password": "secret",
            }
        ],
    )
    embedded_port: int | None = Field(None, description="Port of the managed local broker.")
    message_max_bytes: int = Field(
        1_000_000,
        ge=65_536,
        le=100_000_000,
        description="Largest record callstream produces (librdkafka message.max.bytes); checked "
        "at start against the topics' max.message.bytes. A conversation or result that would "
        "exceed it is dead-lettered (record_too_large) instead of blocking its partition.",
    )

    @field_validator("client_config")
    @classmethod
    def _clients_can_honour(cls, value: dict[str, str]) -> dict[str, str]:
        found = security.problems(value)
        if found:
            raise PydanticCustomError("client_config", "{detail}", {"detail": "; ".join(found)})
        return value


class DatabaseSettings(_Section):
    """The database holding connector state (and, later, cases)."""

    url: str | None = Field(
        None,
        description="SQLAlchemy async URL. Unset: SQLite at data_dir/callstream.db.",
        examples=["postgresql+asyncpg://callstream:secret@db:5432/callstream"],
    )


class HttpSettings(_Section):
    """The HTTP endpoint serving /metrics, /healthz and /connectors."""

    host: str = Field("127.0.0.1", description="Listen address.")
    port: int = Field(8080, ge=0, le=65535, description="Listen port (0: pick a free one).")
    public_url: str | None = Field(
        None,
        description="How users reach this endpoint (e.g. https://callstream.example.com): the "
        "base of report download links in mails. Unset: http://<host>:<port>.",
        examples=["https://callstream.example.com"],
    )


class MailSettings(_Section):
    """The SMTP relay callstream sends mail through: report links, failure notices, address
    verification. Unset ``host``: mail is off (e-mail exports and notices fail visibly)."""

    host: str | None = Field(None, description="SMTP relay host. Unset: mail is off.")
    port: int = Field(587, ge=1, le=65535, description="Relay port (587 STARTTLS, 465 TLS).")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="starttls: upgrade (refused if not offered); tls: TLS from the start; "
        "none: clear text (a relay on loopback only).",
    )
    username: str | None = Field(None, description="Log in as this user (unset: no AUTH).")
    password: SecretStr | None = Field(None, description="Password of ``username``.")
    from_address: str = Field("callstream@localhost", description="From: of every mail.")
    ca_file: Path | None = Field(
        None, description="PEM bundle to verify the relay's certificate (private CA)."
    )
    timeout_seconds: float = Field(30.0, gt=0, description="Connect and per-command timeout.")


class ApiSettings(_Section):
    """The control-plane HTTP API (``/v1``) served on the HTTP endpoint."""

    operator_token: SecretStr | None = Field(
        None,
        description="Bearer token of the operator, who manages tenants and their API keys. "
        "Unset: the operator routes answer 401 (use the CLI: callstream tenants / keys). "
        "At least 32 characters.",
        min_length=32,
        examples=["a 32+ character random string, e.g. from: openssl rand -hex 32"],
    )
    secret_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Fernet keys encrypting connector secrets at rest, newest first: the first "
        "encrypts, every one decrypts (rotation: put the new key first, run "
        "`callstream connectors re-encrypt`, then drop the old one). Unset: a key is generated "
        "once in data_dir/secret.key (mode 0600).",
    )
    connect_allow: list[str] = Field(
        default_factory=list,
        description="Addresses (CIDR blocks or single IPs) that connectors created through the "
        "API and test connection may reach although they are loopback, link-local, private or "
        "multicast. Empty: only public addresses.",
        examples=[["10.20.0.0/16", "127.0.0.1"]],
    )
    max_body_bytes: int = Field(
        8_000_000,
        ge=1024,
        le=100_000_000,
        description="Largest request body accepted; larger ones get 413.",
    )
    max_page_size: int = Field(
        500, ge=1, le=10_000, description="Most items one page of a list returns."
    )

    @field_validator("secret_keys")
    @classmethod
    def _fernet_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for i, key in enumerate(value):
            try:
                Fernet(key.get_secret_value().encode())
            except ValueError:
                raise ValueError(
                    f"key {i} is not a Fernet key (32 url-safe base64-encoded bytes; make one "
                    "with: python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())')"
                ) from None
        return value

    @field_validator("connect_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or CIDR block") from exc
        return value


class ConsoleSettings(_Section):
    """The web console at ``/console`` on the HTTP endpoint (needs the API's database)."""

    enabled: bool = Field(True, description="Serve the console.")
    session_idle_minutes: float = Field(
        30.0,
        gt=0,
        le=24 * 60,
        description="A signed-in session ends after this long without a request.",
    )
    session_max_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="A session ends this long after sign-in, however used."
    )


class ExportSettings(_Section):
    """Analysis reports: how long their files and download links live, how e-mails split them."""

    link_ttl_days: float = Field(
        7.0,
        gt=0,
        le=365,
        description="Lifetime of a stored report file and of its signed download links; the "
        "file is deleted after it.",
    )
    rows_per_email_file: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Most rows in one file of an e-mailed report (one download link each).",
    )


class RetentionConfig(_Section):
    """What happens to a connector's processed originals once they are old (seeds 002/003)."""

    days: float = Field(
        7.0, gt=0, le=3650, description="Keep originals this many days (by their mtime)."
    )
    action: Literal["keep", "purge", "archive"] = Field(
        "keep",
        description="keep: never touch them; purge: delete them; archive: gzip them into "
        "archive_dir (same relative path + .gz), then delete the original.",
    )
    archive_dir: str = Field(
        "archive",
        description="Folder (in the store) of the gzipped originals.",
        examples=["archive"],
    )
    include_invalid: bool = Field(
        False, description="Apply the same to the invalid folder (poll.invalid_dir)."
    )

    @field_validator("archive_dir")
    @classmethod
    def _relative_folder(cls, value: str) -> str:
        parts = value.strip("/").split("/")
        if (
            value.startswith("/")
            or not value.strip("/")
            or any(p in ("", ".", "..") for p in parts)
        ):
            raise ValueError("must be a relative folder inside the store, without '.' or '..'")
        return value.strip("/")


class NotificationSettings(_Section):
    """Failure notices mailed to each tenant's notification addresses (needs ``mail.host``)."""

    quiet_period_hours: float = Field(
        24.0,
        ge=0,
        le=24 * 365,
        description="After a notice about a file path, further failures of the same path send "
        "nothing for this long.",
    )
    watch_interval_seconds: float = Field(
        5.0, gt=0, le=3600, description="How often invalid files are looked for."
    )


class ConnectorSettings(_Section):
    """One source of files for one tenant."""

    name: Slug = Field(description="Unique within the tenant.", examples=["sftp-daily"])
    enabled: bool = Field(True, description="Disabled connectors are not polled.")
    store: StoreConfig = Field(description="Where the files are: type sftp, s3 or local.")
    poll: PollConfig = Field(default_factory=PollConfig, description="Polling and clean-up.")
    ingest: ParseSettings = Field(
        default_factory=ParseSettings, description="How files are parsed into conversations."
    )
    recordings: RecordingSettings | None = Field(
        None,
        description="Recording + metadata bundles (seed 003). Unset: recordings are only copied "
        "to the media store and metadata-like files follow the CSV/chat path.",
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="Processed originals: kept, purged or archived after some days.",
    )
    recording_fetch: RecordingFetchSettings | None = Field(
        None,
        description="Recordings fetched by reference: a row's http(s) recording_ref URL, or "
        "its call id through a voice-log API URL template, is fetched into the media store "
        "(see streams/fetch/settings.py). Unset: recording_ref is kept as the row says.",
    )
    expect_file: ExpectFile | None = Field(
        None,
        description="A daily file is expected by a local time: once it has passed with no file "
        "announced since local midnight, callstream_connector_expected_file_missing is 1 "
        "(the CallstreamExpectedFileMissing alert). Unset: no expectation.",
        examples=[{"by": "07:00", "timezone": "Europe/London"}],
    )


class TenantSettings(_Section):
    """A customer; every file and record it owns is scoped to ``id``."""

    id: Slug = Field(description="Tenant id used in keys and topics.", examples=["acme"])
    connectors: list[ConnectorSettings] = Field(default_factory=list)
    platform_connectors: list[PlatformConnectorSettings] = Field(
        default_factory=list,
        description="Conversation events consumed from a platform's own Kafka cluster, results "
        "produced back to its feedback topic (see streams/platform/).",
    )
    profiles: tuple[Profile, ...] = Field(
        (), description="Quality profiles, tried in order; none match: the built-in default."
    )
    redaction: RedactionSettings = Field(
        default_factory=RedactionSettings,
        description="How card numbers, e-mails and phone numbers in the tenant's turns are "
        "protected before publishing (tenants made through the API: set with PATCH /v1/tenant "
        "or /v1/tenants/{id}, default redact; a config-file tenant's cannot be changed there).",
    )

    @model_validator(mode="after")
    def _unique_connectors(self) -> Self:
        names = [c.name for c in self.connectors] + [c.name for c in self.platform_connectors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate connector name(s): {', '.join(dupes)}")
        return self


class ProcessorSettings(_Section):
    """The stream processors (Faust agents)."""

    enabled: bool = Field(True, description="Run the processors in this process.")
    batch_size: int = Field(
        1000, ge=1, le=100_000, description="Most conversations per case-store transaction."
    )
    batch_within_seconds: float = Field(
        0.2,
        gt=0,
        description="Longest wait to fill a batch of dead letters (the cases consumers take what "
        "has arrived: a backlog fills a batch, a lone record is not held back).",
    )
    commit_interval_seconds: float = Field(
        1.0,
        gt=0,
        description="Offset commit interval of the Faust agents (file arrivals, dead letters); "
        "the cases consumers commit after each stored batch.",
    )
    session_timeout_seconds: float = Field(
        10.0, ge=6, description="How soon a dead worker's partitions move to another."
    )
    chunk_rows: int = Field(
        2000, ge=1, description="Most rows of a file read and published at once."
    )
    chunk_bytes: int = Field(
        8_000_000, ge=65_536, description="Most raw bytes of a file read and published at once."
    )
    row_worker_min_bytes: int = Field(
        2_000_000,
        ge=0,
        description="CSV/TSV files of at least this many bytes are parsed, validated and encoded "
        "in a worker process (a core of its own, streams/ingest/rowworker.py); 0: never.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Attempts for an unknown (non-transient) failure before the batch is "
        "bisected and the poison record dead-lettered (processing_failed).",
    )
    bulk_file_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="Files of at least this many bytes (about 3,500 rows of a typical export "
        "at 1 MiB) are processed in the bulk lane, with their own topics and consumers, so "
        "they never delay smaller files or platform events, which stay in the live lane. "
        "0: every file in the live lane.",
    )


class LocalMediaSettings(_Section):
    """The media store in a local folder (the embedded default)."""

    type: Literal["local"] = Field("local", description="A local (or mounted) folder.")
    root: Path | None = Field(
        None, description="Folder of the media store. Unset: data_dir/media.", examples=["/data"]
    )
    max_bytes: int = Field(
        DEFAULT_MAX_MEDIA_BYTES,
        ge=1,
        le=MAX_MEDIA_BYTES,
        description="Largest recording kept; larger ones are rejected too_large.",
    )


class S3MediaSettings(S3Config):
    """The media store in an S3 bucket (AWS S3, MinIO, GCS through its S3 API). The bucket,
    endpoint and credential fields are the S3 connector's (:class:`connectors.s3.S3Config`)."""

    prefix: str = Field(
        "",
        description="Folder in the bucket every object goes under; '' = the bucket's top. "
        "Multipart uploads are staged under '<prefix>/.incoming/'.",
        examples=["callstream/media"],
    )
    max_bytes: int = Field(
        DEFAULT_MAX_MEDIA_BYTES,
        ge=1,
        le=MAX_MEDIA_BYTES,
        description="Largest recording kept; larger ones are rejected too_large (nothing is "
        "left in the bucket).",
    )
    part_size_bytes: int = Field(
        16 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        le=512 * 1024 * 1024,
        description="Multipart upload part size: the memory one copy holds; smaller "
        "recordings go in one PutObject.",
    )
    stale_upload_minutes: float = Field(
        60.0,
        gt=0,
        description="At start, multipart uploads (and staging objects) under the prefix older "
        "than this are aborted: copies a killed process left unfinished. Make it longer than "
        "the slowest copy of one recording (other workers may be copying).",
    )
    checksums: bool = Field(
        True,
        description="Send S3's own SHA-256 checksums (x-amz-checksum-sha256) with every part "
        "and have S3 compute the whole object's SHA-256 on the final copy. Turn off for "
        "S3-compatible services that refuse these headers; the size and the sha256 metadata "
        "are still checked.",
    )

    @model_validator(mode="after")
    def _parts_fit(self) -> Self:
        if -(-self.max_bytes // self.part_size_bytes) > 10_000:
            raise ValueError("max_bytes / part_size_bytes exceeds S3's 10,000 parts")
        return self


MediaSettings = Annotated[LocalMediaSettings | S3MediaSettings, Field(discriminator="type")]


class RunnerSettings(_Section):
    """The connector runner's pacing."""

    announce_batch_size: int = Field(
        500, ge=1, description="File-arrival events published and recorded per batch."
    )
    backoff_initial_seconds: float = Field(1.0, gt=0, description="First retry delay.")
    backoff_max_seconds: float = Field(60.0, gt=0, description="Longest retry delay.")
    reconcile_interval_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often the runner applies connectors created, changed or deleted "
        "through the API (and tenants disabled, and redaction settings changed in another "
        "process).",
    )


class SchedulerSettings(_Section):
    """Job runs (``/v1/jobs``) and the daily system jobs."""

    enabled: bool = Field(True, description="Claim and run due jobs in this process.")
    tick_seconds: float = Field(
        5.0, gt=0, le=60, description="How often due runs are looked for (and finished)."
    )
    lease_seconds: float = Field(
        300.0,
        ge=10,
        description="A run whose worker stops renewing it this long is failed as interrupted.",
    )
    system_time: str = Field(
        "03:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="UTC time of the daily system job (retention of originals, expired reports).",
    )


GIB = 1024**3


class DropboxSettings(_Section):
    """The hosted SFTP drop box (seeds 002/003, push model): callstream's own SFTP server,
    one account per tenant or connector (``/v1/dropbox/accounts``)."""

    enabled: bool = Field(False, description="Run the SFTP drop box in this process.")
    host: str = Field(
        "127.0.0.1",
        description="Listen address ('0.0.0.0' or '::' to serve every interface).",
        examples=["0.0.0.0"],  # noqa: S104 - an example of serving every interface
    )
    port: int = Field(2222, ge=0, le=65535, description="Listen port (0: pick a free one).")
    host_key_path: Path | None = Field(
        None,
        description="OpenSSH private host key. Unset: data_dir/dropbox/host_key. Generated "
        "(Ed25519, mode 0600) on the first start if absent; its fingerprint is logged.",
    )
    workspace_quota_bytes: int = Field(
        5 * GIB,
        ge=1,
        description="Default most bytes an account's folder may hold (seed 002: 5 GB).",
    )
    daily_quota_bytes: int = Field(
        GIB,
        ge=1,
        description="Default most bytes an account may upload per UTC day (seed 002: 1 GB).",
    )
    login_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="A connection not logged in by then is dropped."
    )


class VoiceSettings(BaseModel):
    """Voice metrics of recordings (:mod:`streams.voice`): decode, voice activity, metrics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="Compute voice metrics for every paired recording.")
    max_concurrency: int = Field(
        2, ge=1, le=64, description="Recordings decoded at once (worker threads); others queue."
    )
    sample_rate: Literal[8000, 16000, 32000, 48000] = Field(
        16000, description="Rate recordings are decoded to for voice activity detection."
    )
    hold_threshold_seconds: float = Field(
        10.0, gt=0, description="A silence (neither side speaking) at least this long is a hold."
    )
    vad_aggressiveness: int = Field(
        2, ge=0, le=3, description="webrtcvad mode: 0 keeps most audio as speech, 3 the least."
    )
    hangover_ms: int = Field(
        300,
        ge=0,
        le=2000,
        description="Pauses shorter than this between speech count as speech (word gaps).",
    )
    silence_floor_dbfs: float = Field(
        -50.0,
        ge=-90,
        le=-10,
        description="A frame whose peak stays below this level is silence, whatever the VAD says "
        "(line noise and dither are not speech).",
    )
    transcription: TranscriptionSettings = Field(
        default_factory=TranscriptionSettings,
        description="Recordings with voice metrics are transcribed per channel into turns; the "
        "case gets a new version with them (streams/voice/transcribe.py).",
    )


Role = Literal["connectors", "processors", "api"]
ROLES: tuple[Role, ...] = ("connectors", "processors", "api")
"""What a process can run (``roles``; ``callstream run --roles``)."""


class Settings(BaseSettings):
    """The whole configuration of one callstream process."""

    model_config = SettingsConfigDict(
        env_prefix="CALLSTREAM_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )
    config_file: ClassVar[Path | None] = None

    data_dir: Path = Field(Path("var"), description="Local state: SQLite, broker, media, demo.")
    schemas_dir: Path = Field(DEFAULT_SCHEMAS_DIR, description="Folder of .avsc schemas.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field("text", description="json in production.")
    shutdown_grace_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Longest time SIGTERM / Ctrl-C waits for every part to stop (work in "
        "flight, a retrying processor, a broker that is gone). Whatever has not stopped by then "
        "is named in the log and the process exits with status 1; unacknowledged work is "
        "redelivered on the next start.",
    )
    demo: bool | None = Field(
        None, description="Seed a demo tenant and sample files. Unset: only if no tenants."
    )
    roles: list[Role] = Field(
        default_factory=lambda: list(ROLES),
        min_length=1,
        description="What this process runs (any number of processes may share one Kafka and "
        "database): connectors (polling, announcing and cleaning up files, owned one worker "
        "at a time through Kafka's group membership; the drop box; platform connectors), "
        "processors (files -> conversations -> cases -> results), api (the /v1 API and the "
        "console). Every process serves /metrics, /healthz and /readyz and runs due jobs "
        "(scheduler.enabled).",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    exports: ExportSettings = Field(default_factory=ExportSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    dropbox: DropboxSettings = Field(default_factory=DropboxSettings)
    processors: ProcessorSettings = Field(default_factory=ProcessorSettings)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    media: MediaSettings = Field(
        default_factory=LocalMediaSettings,
        description="Where recordings and oversized raw rows are kept: type local or s3.",
    )
    tenants: list[TenantSettings] = Field(default_factory=list)

    def runs(self, role: Role) -> bool:
        """Tell whether this process runs ``role`` (``processors.enabled: false`` turns the
        processors off too)."""
        return role in self.roles and (role != "processors" or self.processors.enabled)

    @model_validator(mode="after")
    def _sizes_agree(self) -> Self:
        for t in self.tenants:
            for c in t.connectors:
                found = size_problems(c, self.kafka.message_max_bytes)
                if found:
                    raise ValueError(f"tenants[{t.id}].connectors[{c.name}].{found[0]}")
            for p in t.platform_connectors:
                limit = self.kafka.message_max_bytes
                if p.ingest.max_document_bytes >= limit:
                    raise ValueError(
                        f"tenants[{t.id}].platform_connectors[{p.name}].ingest.max_document_bytes "
                        f"({p.ingest.max_document_bytes}) must be below kafka.message_max_bytes "
                        f"({limit}): every accepted event must fit one record"
                    )
        return self

    @model_validator(mode="after")
    def _unique_tenants(self) -> Self:
        ids = [t.id for t in self.tenants]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate tenant id(s): {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _no_overlapping_stores(self) -> Self:
        """Refuse two connectors (of any tenants) whose folders are the same or nested."""
        seen: list[tuple[str, tuple[object, ...], str]] = []
        problems = []
        for tenant in self.tenants:
            for conn in tenant.connectors:
                label = f"{tenant.id}/{conn.name}"
                account, root = store_scope(conn.store)
                for other, other_account, other_root in seen:
                    if account == other_account and _nested(root, other_root):
                        problems.append(
                            f"connectors {other} and {label} watch overlapping folders "
                            f"({other_root!r} and {root!r} on the same {account[0]} store): "
                            "each would announce and clean up the other's files"
                        )
                seen.append((label, account, root))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=cls.config_file))
        return tuple(sources)

    @property
    def database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file."""
        return self.database.url or f"sqlite+aiosqlite:///{(self.data_dir / 'callstream.db')}"

    @property
    def dropbox_host_key(self) -> Path:
        """The drop box's host key file (``dropbox.host_key_path``, default under data_dir)."""
        return self.dropbox.host_key_path or self.data_dir / "dropbox" / "host_key"

    @property
    def media_root(self) -> Path:
        """The local media store's folder (``media.root``, default data_dir/media)."""
        root = self.media.root if isinstance(self.media, LocalMediaSettings) else None
        return root or self.data_dir / "media"

    def profiles_of(self, tenant: str) -> tuple[Profile, ...]:
        """Return a tenant's quality profiles (empty: the default applies)."""
        for t in self.tenants:
            if t.id == tenant:
                return t.profiles
        return ()

    @property
    def demo_enabled(self) -> bool:
        """Whether to seed the demo tenant."""
        return self.demo if self.demo is not None else not self.tenants


def size_problems(conn: ConnectorSettings, limit: int) -> list[str]:
    """Return each size limit of ``conn`` that does not fit a Kafka record of ``limit`` bytes,
    as ``"<field path> (<value>) must be below ..."``."""
    found = []
    for name in ("max_row_bytes", "max_document_bytes"):
        value = getattr(conn.ingest, name)
        if value >= limit:
            found.append(
                f"ingest.{name} ({value}) must be below kafka.message_max_bytes ({limit}): "
                "every accepted row must fit one record"
            )
    if conn.recordings is not None and conn.recordings.metadata.max_bytes >= limit:
        found.append(
            f"recordings.metadata.max_bytes ({conn.recordings.metadata.max_bytes}) must be "
            f"below kafka.message_max_bytes ({limit}): a call's metadata travels in one record"
        )
    return found


def stores_overlap(
    a: SftpConfig | LocalConfig | S3Config, b: SftpConfig | LocalConfig | S3Config
) -> bool:
    """Tell whether two stores watch the same folder or nested ones (see :func:`store_scope`)."""
    account_a, root_a = store_scope(a)
    account_b, root_b = store_scope(b)
    return account_a == account_b and _nested(root_a, root_b)


def store_scope(store: SftpConfig | LocalConfig | S3Config) -> tuple[tuple[object, ...], str]:
    """Return (the account a store lives in, its root folder in a comparable form).

    S3: the account is the endpoint and the bucket (bucket names are global on AWS), the root
    the prefix ('.' for the whole bucket, which overlaps every prefix in it).
    """
    if isinstance(store, LocalConfig):
        return ("local",), os.path.realpath(store.root)
    if isinstance(store, S3Config):
        endpoint = (store.endpoint_url or "aws").lower()
        return ("s3", endpoint, store.bucket), store.prefix or "."
    root = posixpath.normpath(store.root) if store.root else "."
    return ("sftp", store.host.lower(), store.port, store.username), root


def _nested(a: str, b: str) -> bool:
    """Tell whether one folder is the other or contains it (relative roots: ``.`` is home)."""
    if a == b or ("." in (a, b) and not (a.startswith("/") or b.startswith("/"))):
        return True
    return a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"{loc}: {err['msg']}")
    return lines


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from ``config_file`` (or ``CALLSTREAM_CONFIG``), env vars and overrides."""
    path = config_file or (Path(p) if (p := os.environ.get("CALLSTREAM_CONFIG")) else None)
    if path is not None:
        if not path.is_file():
            raise ConfigError([f"config file {str(path)!r}: not found"])
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError([f"config file {str(path)!r}: {exc}"]) from exc
        if data is not None and not isinstance(data, dict):
            raise ConfigError([f"config file {str(path)!r}: top level must be a mapping"])
    Settings.config_file = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from exc
    finally:
        Settings.config_file = None
