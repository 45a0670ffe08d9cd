"""Settings of one platform Kafka connector (``tenants[].platform_connectors[]``).

A platform connector consumes conversation events from the platform's *own* Kafka cluster (its
bootstrap servers, TLS and SASL login, not callstream's) and produces analysis results back to
the platform's feedback topic there. Values are JSON objects or Avro records (schemaless with a
configured writer schema, or the Confluent wire format when ``schema_registry_url`` is set);
their keys are mapped to Conversation fields by ``ingest`` exactly as CSV columns are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import fastavro
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from streams import security
from streams.fetch.settings import RecordingFetchSettings
from streams.ingest.parse import ParseSettings

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]


def load_avro_schema(text: str) -> Any:
    """Parse ``avro_schema`` (inline JSON, or the path of an .avsc file) into a fastavro schema.

    Raises ValueError saying what is wrong; the schema must be a record.
    """
    stripped = text.strip()
    if stripped.startswith(("{", "[", '"')):
        raw = stripped
    else:
        try:
            raw = Path(stripped).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"not inline JSON and not a readable file: {exc}") from exc
    try:
        parsed = fastavro.parse_schema(json.loads(raw))
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        raise ValueError(f"not a valid Avro schema: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise ValueError("the schema must be an Avro record (one event = one record)")
    return parsed


class PlatformConnectorSettings(BaseModel):
    """One platform Kafka connector: where the events are, how to read them, where results go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Slug = Field(
        description="Unique within the tenant (file connectors included); names the connector "
        "in dead letters, lineage and metrics.",
        examples=["genesys-events"],
    )
    type: Literal["kafka"] = Field("kafka", description="The platform's transport: kafka.")
    enabled: bool = Field(True, description="Disabled connectors consume nothing.")
    bootstrap_servers: str = Field(
        min_length=1,
        description="The platform cluster's broker list (not callstream's own).",
        examples=["platform-kafka-1:9093,platform-kafka-2:9093"],
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How to reach the platform cluster."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (required with a SASL_* protocol)."
    )
    username: str | None = Field(None, description="SASL user (required with SASL_*).")
    password: SecretStr | None = Field(
        None, description="SASL password (required with SASL_*); never logged or returned."
    )
    ssl_ca_file: Path | None = Field(
        None, description="PEM file of the CA that signed the platform brokers' certificates."
    )
    topics: list[TopicName] = Field(
        min_length=1,
        description="Topics of conversation events to consume.",
        examples=[["platform.conversations"]],
    )
    group_id: str = Field(
        min_length=1,
        max_length=255,
        description="Consumer group on the platform cluster; its offsets are committed only "
        "after the events are durably on callstream's conversations topic.",
        examples=["callstream-acme"],
    )
    value_format: Literal["json", "avro"] = Field(
        "json", description="json: one JSON object per event; avro: one Avro record per event."
    )
    avro_schema: str | None = Field(
        None,
        description="The events' Avro writer schema (a record): inline JSON or the path of an "
        ".avsc file. Used for schemaless Avro values (value_format avro without a registry).",
    )
    schema_registry_url: str | None = Field(
        None,
        description="Confluent schema registry: values are in the Confluent wire format (magic "
        "byte 0, 4-byte schema id) and writer schemas are fetched from "
        "<url>/schemas/ids/<id> (cached).",
        examples=["https://registry.platform.example.com"],
    )
    feedback_topic: TopicName | None = Field(
        None,
        description="Topic on the platform cluster that receives the analysis results of this "
        "connector's conversations (key: the platform's conversation id; header "
        "idempotency-key). Unset: no results are sent back.",
        examples=["platform.quality-results"],
    )
    feedback_format: Literal["avro", "json"] = Field(
        "avro",
        description="avro: the callstream.AnalysisResult record as on callstream's own "
        "analysis-results topic (schemaless); json: the same fields as a JSON object.",
    )
    batch_size: int = Field(
        500, ge=1, le=10_000, description="Most events read, published and committed at once."
    )
    session_timeout_seconds: float = Field(
        10.0,
        ge=6,
        le=300,
        description="How soon the partitions of a dead callstream worker move to another "
        "member of group_id on the platform cluster (within the broker's group session limits).",
    )
    ingest: ParseSettings = Field(
        default_factory=ParseSettings,
        description="How event fields map to Conversation fields (mapping, aliases, time zone, "
        "source_system, default_channel, max_document_bytes), as for a CSV file's columns.",
    )
    recording_fetch: RecordingFetchSettings | None = Field(
        None,
        description="Recordings fetched by reference: an event's http(s) recording_ref URL, "
        "or its call id through a voice-log API URL template, is fetched into the media store "
        "(as for a CSV connector). Unset: recording_ref is kept as the event says.",
    )

    @field_validator("schema_registry_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @field_validator("avro_schema")
    @classmethod
    def _schema_parses(cls, value: str | None) -> str | None:
        if value is not None:
            load_avro_schema(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.value_format == "avro" and not (self.avro_schema or self.schema_registry_url):
            raise ValueError("value_format avro needs avro_schema or schema_registry_url")
        if self.value_format == "json" and (self.avro_schema or self.schema_registry_url):
            raise ValueError("avro_schema and schema_registry_url apply to value_format avro")
        found = security.problems(self.client_properties())
        if found:
            raise ValueError("; ".join(found))
        return self

    def client_properties(self) -> dict[str, str]:
        """The librdkafka security properties of this connector (the password included)."""
        props: dict[str, str] = {"security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            props["sasl.mechanism"] = self.sasl_mechanism
        if self.username is not None:
            props["sasl.username"] = self.username
        if self.password is not None:
            props["sasl.password"] = self.password.get_secret_value()
        if self.ssl_ca_file is not None:
            props["ssl.ca.location"] = str(self.ssl_ca_file)
        return props

    def writer_schema(self) -> Any:
        """The configured Avro writer schema, parsed (None when unset)."""
        return load_avro_schema(self.avro_schema) if self.avro_schema else None
