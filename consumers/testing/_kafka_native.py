"""A private native single-node Kafka broker for tests, from Maven Central jars.

`NativeKafka` fetches Kafka and its runtime dependencies with Maven once, formats
KRaft storage under the state directory and runs broker and controller in one
detached JVM that outlives the test session, so the next one reuses it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Final

from confluent_kafka.admin import AdminClient

from ._native import (
    _READY_TIMEOUT,
    _SETUP_TIMEOUT,
    ServiceUnavailable,
    _NativeService,
    _process_matches,
    _progress,
    _run,
    _tail,
)

KAFKA_VERSION: Final = "3.9.1"
_KAFKA_STOP_BUDGET: Final = 30.0  # a controlled shutdown of one KRaft node takes ~1-2 s

_POM: Final = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.onceflow.testing</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <!-- Kafka's pom names no logging backend; its distribution ships these two. -->
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version>
    </dependency>
    <dependency>
      <groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version>
    </dependency>
  </dependencies>
</project>
"""


class NativeKafka(_NativeService):
    """A private single-node KRaft Kafka broker for tests, run from Maven Central jars.

    Broker and controller in one JVM, listening on 127.0.0.1 only; topics are never
    auto-created, so an unknown topic is an error as it should be in production.
    """

    _name = "kafka"

    @property
    def bootstrap(self) -> str:
        """Bootstrap address (valid once ``start()`` has run once)."""
        return f"127.0.0.1:{self._ports()['broker']}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, or None (crash tests may SIGKILL it)."""
        try:
            pid = int((self._home / "broker.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _process_matches(pid, str(self._config)) else None

    def is_running(self) -> bool:
        """Whether the broker process is alive."""
        return self.pid is not None

    @property
    def _config(self) -> Path:
        return self._home / "server.properties"

    def _start_locked(self) -> None:
        if (pid := self.pid) is not None:
            self._wait_ready(pid)
            return
        java = shutil.which("java")
        if java is None:
            raise ServiceUnavailable(
                "no `java` on PATH: install Java 17+ (apt-get install -y openjdk-17-jre-headless)"
            )
        libs = self._ensure_libs()
        self._write_config(self._claim_ports("broker", "controller"))
        log4j = f"-Dlog4j.configuration=file:{self._home / 'log4j.properties'}"
        jvm = [java, "-Xmx512m", "-XX:+ExitOnOutOfMemoryError", log4j, "-cp", f"{libs}/*"]
        if not (self._home / "data" / "meta.properties").exists():
            _progress(f"formatting Kafka storage in {self._home / 'data'}")
            storage = ["kafka.tools.StorageTool", "format", "--ignore-formatted"]
            storage += ["-t", _cluster_id(), "-c", str(self._config)]
            _run([*jvm, *storage], what="Kafka storage format", timeout=120)
        _progress(f"starting Kafka on {self.bootstrap} (log: {self._home / 'broker.log'})")
        # Detached through a shell that exits at once: the JVM is nobody's child here,
        # so it outlives this process without leaving zombies or ResourceWarnings.
        detach = 'out="$1"; shift; "$@" >"$out" 2>&1 </dev/null & echo $!'
        broker = [*jvm, "kafka.Kafka", str(self._config)]
        launch = ["/bin/sh", "-c", detach, "sh", str(self._home / "broker.out"), *broker]
        out = _run(launch, what="launching Kafka", timeout=30, cwd=self._home)
        pid = int(out)
        (self._home / "broker.pid").write_text(f"{pid}\n")
        self._wait_ready(pid)

    def _stop_locked(self) -> None:
        if (pid := self.pid) is not None:
            os.kill(pid, signal.SIGTERM)  # controlled shutdown: logs flushed and closed
            if not self._wait_gone(pid, _KAFKA_STOP_BUDGET):
                _progress(f"Kafka (pid {pid}) ignored SIGTERM for {_KAFKA_STOP_BUDGET:.0f}s")
                os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid, 10.0)
        (self._home / "broker.pid").unlink(missing_ok=True)

    def _wait_gone(self, pid: int, budget: float) -> bool:
        deadline = time.monotonic() + budget
        while _process_matches(pid, str(self._config)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _wait_ready(self, pid: int) -> None:
        """Wait until the broker answers a metadata request."""
        # log_level 0: librdkafka would print every refused connection while it boots.
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            if not _process_matches(pid, str(self._config)):
                raise ServiceUnavailable(
                    f"Kafka (pid {pid}) exited while starting\n{_tail(self._home / 'broker.log')}"
                    f"\n{_tail(self._home / 'broker.out')}"
                )
            with contextlib.suppress(Exception):
                if admin.list_topics(timeout=1.0).brokers:
                    return
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"Kafka at {self.bootstrap} (pid {pid}) did not answer within"
                    f" {_READY_TIMEOUT:.0f}s\n{_tail(self._home / 'broker.log')}"
                )
            time.sleep(0.2)

    def _ensure_libs(self) -> Path:
        """Resolve Kafka and its runtime dependencies into ``libs/`` once."""
        libs = self._home / "libs"
        if (libs / ".complete").exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceUnavailable("no `mvn` on PATH to fetch the Kafka jars: install Maven")
        build = self._home / "maven"
        build.mkdir(parents=True, exist_ok=True)
        (build / "pom.xml").write_text(_POM)
        partial = self._home / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        _progress(
            f"fetching Kafka {KAFKA_VERSION} jars with Maven into {libs}"
            " (first start only; can take a minute)"
        )
        started = time.monotonic()
        goal = ["dependency:copy-dependencies", "-DincludeScope=runtime"]
        goal += [f"-DoutputDirectory={partial}", "-f", str(build / "pom.xml")]
        _run([mvn, "-B", "-q", *goal], what="Maven", timeout=_SETUP_TIMEOUT, cwd=build)
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)  # all or nothing: an interrupted fetch is redone next time
        (libs / ".complete").touch()
        jars = len(list(libs.glob("*.jar")))
        _progress(f"fetched {jars} jars in {time.monotonic() - started:.0f}s")
        return libs

    def _write_config(self, ports: dict[str, int]) -> None:
        broker, controller = ports["broker"], ports["controller"]
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller}",
            "listeners": f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self._home / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",  # tests should not wait 3 s per group
            "auto.create.topics.enable": "false",  # an unknown topic is an error
            # Postgres shares this disk: the log written back every second never
            # piles up for the kernel's write-back, a burst every 30 s that a
            # Postgres commit would wait behind (bench/README.md, latency tail).
            "log.flush.interval.ms": "1000",
            "log.flush.scheduler.interval.ms": "1000",
            # A deleted topic's files go at once rather than a minute later,
            # inside whatever runs next (a benchmark's next phase, say).
            "log.segment.delete.delay.ms": "0",
        }
        self._config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        # The log goes to a file: a test run's terminal is no place for broker chatter.
        (self._home / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
            f"log4j.appender.file.File={self._home / 'broker.log'}\n"
            "log4j.appender.file.MaxFileSize=20MB\n"
            "log4j.appender.file.MaxBackupIndex=2\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )


def _native_kafka_bootstrap() -> str:
    broker = NativeKafka()
    broker.start()
    return broker.bootstrap


def _cluster_id() -> str:
    # Kafka's Uuid.randomUuid() format; like it, avoid a leading "-" (read as an option).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid
