"""Engine settings: arguments first, then ONCEFLOW_* environment variables."""

from __future__ import annotations

import os
import socket
import uuid

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._errors import ConfigurationError


def _default_executor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class EngineSettings(BaseSettings):
    """Every engine setting, frozen once built.

    Attributes:
        database_url: Postgres URL (ONCEFLOW_DATABASE_URL).
        schema_name: schema of the system tables (ONCEFLOW_SCHEMA).
        workers: workflows run at once by this process.
        lease: seconds without a heartbeat after which an executor's
            PENDING workflows are claimed by a live one.
        heartbeat: seconds between heartbeats (well under `lease`).
        executor_id: this process's identity; a restart under the same ID
            resumes its own work at once instead of after the lease.
        inline_steps: also write the step checkpoints of workflows run
            inline (`execution="inline"`). Off by default: such a workflow
            ends in the very transaction that records it, so nothing ever
            replays its steps; its row keeps its output.
        inline_inputs: also keep the input of workflows run inline. Off by
            default, for the same reason: its row is final when written, and
            a Kafka-fed row says where its record is (source topic,
            partition and offset). Its `input` is then None. About a third
            of the row's bytes, and of the Postgres work per event.
    """

    model_config = SettingsConfigDict(env_prefix="ONCEFLOW_", frozen=True, extra="forbid")

    database_url: SecretStr | None = None
    schema_name: str = Field(
        default="onceflow", alias="ONCEFLOW_SCHEMA", pattern=r"^[a-z_][a-z0-9_]*$"
    )
    workers: int = Field(default=64, ge=1, le=4096)
    lease: float = Field(default=10.0, gt=0)
    heartbeat: float = Field(default=1.0, gt=0)
    executor_id: str = Field(default_factory=_default_executor_id, min_length=1)
    writers: int = Field(default=2, ge=1, le=64)
    max_batch: int = Field(default=1000, ge=1)
    inline_steps: bool = False
    inline_inputs: bool = False

    def url(self) -> str:
        if self.database_url is None:
            raise ConfigurationError(
                "no database URL: pass Engine('postgresql://…') or set ONCEFLOW_DATABASE_URL"
            )
        return self.database_url.get_secret_value()


def build_settings(**given: object) -> EngineSettings:
    values = {k: v for k, v in given.items() if v is not None}
    if "schema_name" in values:
        values["ONCEFLOW_SCHEMA"] = values.pop("schema_name")
    try:
        settings = EngineSettings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"bad engine settings: {problems}") from None
    if settings.heartbeat >= settings.lease:
        raise ConfigurationError(
            f"heartbeat ({settings.heartbeat}s) must be shorter than lease ({settings.lease}s), "
            "or live executors would look dead"
        )
    return settings
