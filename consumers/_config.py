"""Kafka connection settings: arguments, then ONCEFLOW_KAFKA_* variables."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine import ConfigurationError

# Settings Onceflow owns: the guarantee rests on them (DESIGN.md §4).
RESERVED = {
    "enable.auto.offset.store": "offsets are stored only after the batch is durable in Postgres",
    "group.id": "pass group= to subscribe()",
}


class KafkaSettings(BaseSettings):
    """How to reach Kafka.

    Attributes:
        bootstrap_servers: host:port list (ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS).
        security_protocol, sasl_*: for secured clusters.
        extra: any other librdkafka setting, passed through as given.
    """

    model_config = SettingsConfigDict(env_prefix="ONCEFLOW_KAFKA_", frozen=True, extra="forbid")

    bootstrap_servers: str = "localhost:9092"
    client_id: str = "onceflow"
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def librdkafka(self) -> dict[str, Any]:
        """The confluent-kafka configuration dict these settings stand for."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
        }
        if self.security_protocol:
            conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        conf.update(self.extra)
        return conf


def kafka_settings(raw: dict[str, Any] | None) -> KafkaSettings:
    """Settings from a raw confluent-kafka dict (its keys pass through), with
    the environment filling in what the dict leaves out."""
    raw = dict(raw or {})
    given: dict[str, Any] = {}
    if "bootstrap.servers" in raw:
        given["bootstrap_servers"] = raw.pop("bootstrap.servers")
    check_reserved(raw)
    try:
        return KafkaSettings(**given, extra=raw)
    except ValidationError as exc:
        raise ConfigurationError(f"bad Kafka settings: {exc}") from None


def check_reserved(conf: dict[str, Any]) -> None:
    for key, why in RESERVED.items():
        if key in conf:
            raise ConfigurationError(f"the Kafka setting {key!r} is managed by Onceflow: {why}")
