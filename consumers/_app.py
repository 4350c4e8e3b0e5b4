"""KafkaApp: subscribe handlers to topics, run them as a consumer service."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from engine import ConfigurationError, Engine, current_workflow_id

from . import _gc
from ._config import check_reserved, kafka_settings
from ._event import Envelope, EnvelopeDocument
from ._group import GroupConsumer
from ._scheduler import Ordering
from ._subscription import EXECUTIONS, ORDERINGS, Execution, Subscription
from ._topics import describe_topics, patiently

log = logging.getLogger("onceflow.app")

H = TypeVar("H", bound=Callable[..., Any])


class KafkaApp:
    """Handlers subscribed to Kafka topics, each record a durable workflow.

    Args:
        engine: the Engine the workflows run on.
        kafka: confluent-kafka settings (at least `bootstrap.servers`, else
            ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS); passed through as given, but
            for the few Onceflow owns.
        batch_size: records taken per poll and recorded in one statement.
        stop_timeout: seconds a graceful stop gives running workflows.
        start_timeout: seconds `start()` waits for Kafka and Postgres to be
            reachable (retrying with backoff, logging each failure) before it
            gives up with the last error.
    """

    def __init__(
        self,
        engine: Engine,
        kafka: dict[str, Any] | None = None,
        *,
        batch_size: int = 500,
        stop_timeout: float = 10.0,
        start_timeout: float = 300.0,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {batch_size}")
        self.engine = engine
        self.kafka = kafka_settings(kafka)
        self.batch_size = batch_size
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self._subs: list[Subscription] = []
        self._groups: dict[str, GroupConsumer] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._errors: list[BaseException] = []

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs)

    def subscribe(
        self,
        *topics: str,
        group: str,
        model: type[BaseModel] | None = None,
        ordering: Ordering = "key",
        max_in_flight: int = 256,
        max_buffered: int | None = None,
        name: str | None = None,
        execution: Execution = "auto",
        consumer_config: dict[str, Any] | None = None,
    ) -> Callable[[H], H]:
        """Run the decorated handler as a durable workflow for every record of
        `topics` consumed by `group`.

        Args:
            ordering: "key" (same key in offset order, keys concurrent;
                keyless records in partition order), "partition" or "none".
            max_in_flight: workflows running at once, per partition and in all.
            max_buffered: records held per partition before it is paused
                (default 4 x max_in_flight, at least 1,000).
            name: the workflow name (default `kafka:{group}:{module.function}`);
                keep it stable across deploys, recovery looks workflows up by it.
            execution: "inline" runs fresh records in the consumer thread, in
                offset order, inside the transaction that records their batch:
                one commit per poll batch, for handlers without slow calls (a
                handler that raises sends its batch the "workers" way, where
                steps retry). "workers" runs each workflow on a worker thread,
                its steps checkpointed by the group-commit writers. "auto"
                (default) runs inline until three runs in a row take over
                10 ms each, then on the workers for a minute, and so on; a
                batch that fell back sends it to the workers for 10 s.
            consumer_config: extra confluent-kafka consumer settings.
        """
        if not topics:
            raise ConfigurationError("subscribe() needs at least one topic")
        if not group:
            raise ConfigurationError("subscribe() needs a group")
        if ordering not in ORDERINGS:
            raise ConfigurationError(
                f"ordering must be one of {', '.join(ORDERINGS)}, not {ordering!r}"
            )
        if execution not in EXECUTIONS:
            raise ConfigurationError(
                f"execution must be one of {', '.join(EXECUTIONS)}, not {execution!r}"
            )
        if max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigurationError(f"model must be a pydantic BaseModel class, got {model!r}")
        extra = dict(consumer_config or {})
        check_reserved(extra)
        for topic in topics:
            for sub in self._subs:
                if sub.group == group and topic in sub.topics:
                    raise ConfigurationError(
                        f"topic {topic!r} is already subscribed under group {group!r} by "
                        f"{sub.name}; one handler per group and topic (use another group "
                        "to process the topic twice)"
                    )

        def register(handler: H) -> H:
            wf_name = name or f"kafka:{group}:{handler.__module__}.{handler.__qualname__}"
            sub = Subscription(
                handler=handler,
                name=wf_name,
                topics=tuple(topics),
                group=group,
                model=model,
                ordering=ordering,
                max_in_flight=max_in_flight,
                max_buffered=max_buffered or max(1000, 4 * max_in_flight),
                execution=execution,
                consumer_config=extra,
            )

            def run_record(envelope: dict[str, Any]) -> Any:
                wid = current_workflow_id()
                # The first run here takes the Event decoded when the record came.
                if (
                    isinstance(envelope, EnvelopeDocument)
                    and (event := envelope.take_event(wid)) is not None
                ):
                    return handler(event)
                return handler(sub.decode(Envelope.from_json(envelope), wid))

            self.engine.workflow(name=wf_name)(run_record)
            self._subs.append(sub)
            return handler

        return register

    # -- running --------------------------------------------------------------

    def start(self) -> None:
        """Launch the engine and the group consumers in background threads."""
        if not self._subs:
            raise ConfigurationError(
                "no subscriptions: decorate a handler with @app.subscribe(...)"
            )
        conf = self.kafka.librdkafka()
        topics = sorted({t for s in self._subs for t in s.topics})
        # An unknown topic is an error now, not a silent wait; an unreachable
        # broker or database is waited for.
        patiently(
            "looking up topics " + ", ".join(topics),
            lambda: describe_topics(conf, topics),
            patience=self.start_timeout,
            stop=self._stop,
        )
        patiently(
            "launching the engine", self.engine.launch, patience=self.start_timeout, stop=self._stop
        )
        by_group: dict[str, list[Subscription]] = {}
        for sub in self._subs:
            by_group.setdefault(sub.group, []).append(sub)
        for group, subs in by_group.items():
            gc = GroupConsumer(
                self.engine,
                group,
                subs,
                conf,
                batch_size=self.batch_size,
                revoke_timeout=self.stop_timeout,
            )
            self._groups[group] = gc
            t = threading.Thread(
                target=self._run_group, args=(gc,), name=f"onceflow-group-{group}", daemon=True
            )
            self._threads.append(t)
            t.start()

    def _run_group(self, gc: GroupConsumer) -> None:
        try:
            gc.run(self._stop)
        except BaseException as exc:
            log.exception("group %s stopped on an error", gc.group)
            self._errors.append(exc)
            self._stop.set()

    def stop(self) -> None:
        """Stop consuming, give running workflows `stop_timeout`, hand back the rest."""
        self._stop.set()
        for t in self._threads:
            t.join(self.stop_timeout + 15)
        self.engine.shutdown(timeout=self.stop_timeout)

    def run(self, *, progress_every: float = 10.0) -> None:
        """Run the consumer service until SIGTERM or SIGINT, then stop gracefully."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._stop.set())
        self.start()
        _gc.tune_for_service()
        last = time.monotonic()
        while not self._stop.wait(0.5):
            if progress_every and time.monotonic() - last >= progress_every:
                last = time.monotonic()
                log.info("progress: %s", self.stats())
        log.info("stopping")
        self.stop()
        if self._errors:
            raise self._errors[0]

    def stats(self) -> dict[str, int]:
        """Counters summed over groups: consumed, recorded, duplicates,
        bad_records, succeeded, failed, handed_over, in_flight, buffered."""
        total: dict[str, int] = {}
        for gc in self._groups.values():
            for key, value in vars(gc.stats).items():
                total[key] = total.get(key, 0) + value
            total["in_flight"] = total.get("in_flight", 0) + gc.in_flight()
            total["buffered"] = total.get("buffered", 0) + gc.buffered()
        return total

    def __repr__(self) -> str:
        return f"<KafkaApp {len(self._subs)} subscriptions>"
