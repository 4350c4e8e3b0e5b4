"""Real Postgres and a real Kafka broker for tests: the one implementation.

Onceflow's exactly-once argument rests on real Postgres transactions and real Kafka
consumer-group semantics, so its tests (and users' tests of their own workflows) must
run against the real services (DESIGN.md §8). Each service is resolved in this order:

1. an environment variable naming a service someone already runs
   (``ONCEFLOW_TEST_DATABASE_URL``, ``ONCEFLOW_TEST_KAFKA``);
2. testcontainers, when a Docker engine answers;
3. a private native process under a state directory (``ONCEFLOW_SERVICES_DIR``,
   default ``~/.cache/onceflow/services``): Postgres from the OS packages, Kafka from
   Maven Central jars. It outlives the test session so the next one reuses it.

When all fail the caller gets ``ServiceUnavailable`` saying how to provide one: a test
run without its services must fail loudly, never skip.

Importing this module starts nothing and imports nothing else from Onceflow.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import gc
import hashlib
import importlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import psycopg
from confluent_kafka.admin import AdminClient
from psycopg import sql

ENV_DATABASE_URL: Final = "ONCEFLOW_TEST_DATABASE_URL"
ENV_KAFKA: Final = "ONCEFLOW_TEST_KAFKA"
ENV_SERVICES_DIR: Final = "ONCEFLOW_SERVICES_DIR"

POSTGRES_IMAGE: Final = "postgres:16"
KAFKA_IMAGE: Final = "confluentinc/cp-kafka:7.6.0"
KAFKA_VERSION: Final = "3.9.1"

_PG_ROLE: Final = "onceflow"
_PG_DATABASE: Final = "onceflow"
_PG_OS_USER: Final = "postgres"  # Postgres refuses to run as root; see _service_user().
# Budgets: generous for a loaded 2-core CI machine, short enough that a broken
# service fails the run within a minute instead of hanging it.
_PG_READY_TIMEOUT: Final = 60.0
_KAFKA_READY_TIMEOUT: Final = 60.0
_KAFKA_STOP_BUDGET: Final = 30.0  # controlled shutdown of one KRaft node takes ~2 s
_SETUP_TIMEOUT: Final = 900.0  # apt-get or a cold Maven fetch


class ServiceUnavailable(RuntimeError):
    """No test service could be provided; the message says how to provide one."""


def default_state_dir() -> Path:
    """Where native services keep data, ports and logs between test sessions."""
    raw = os.environ.get(ENV_SERVICES_DIR)
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "onceflow" / "services"


# --------------------------------------------------------------------------- public


def postgres_url() -> str:
    """Return a Postgres server URL for a role that may CREATE DATABASE.

    Raises:
        ServiceUnavailable: no source worked; the message lists each one's error.
    """
    if url := os.environ.get(ENV_DATABASE_URL):
        return url
    tried: list[str] = []
    if (docker_error := _docker_error()) is None:
        try:
            return _from_container("postgres", _start_postgres_container)
        except Exception as exc:
            tried.append(f"testcontainers {POSTGRES_IMAGE}: {exc!r}")
    else:
        tried.append(f"Docker engine: {docker_error}")
    try:
        native = NativePostgres()
        native.start()
        return native.url
    except Exception as exc:
        tried.append(f"native Postgres: {exc}")
    raise ServiceUnavailable(
        _how_to(
            "Postgres",
            f"export {ENV_DATABASE_URL}=postgresql://USER:PASSWORD@HOST:5432/postgres"
            " (a role allowed to CREATE DATABASE)",
            f"start a Docker engine (testcontainers then runs {POSTGRES_IMAGE})",
            tried,
        )
    )


def kafka_bootstrap() -> str:
    """Return a Kafka bootstrap address (``host:port``) of a broker for tests.

    Raises:
        ServiceUnavailable: no source worked; the message lists each one's error.
    """
    if bootstrap := os.environ.get(ENV_KAFKA):
        return bootstrap
    tried: list[str] = []
    if (docker_error := _docker_error()) is None:
        try:
            return _from_container("kafka", _start_kafka_container)
        except Exception as exc:
            tried.append(f"testcontainers {KAFKA_IMAGE}: {exc!r}")
    else:
        tried.append(f"Docker engine: {docker_error}")
    try:
        native = NativeKafka()
        native.start()
        return native.bootstrap
    except Exception as exc:
        tried.append(f"native Kafka: {exc}")
    raise ServiceUnavailable(
        _how_to(
            "Kafka",
            f"export {ENV_KAFKA}=HOST:9092 (a broker with auto.create.topics.enable=false)",
            f"start a Docker engine (testcontainers then runs {KAFKA_IMAGE} in KRaft mode)",
            tried,
        )
    )


def _how_to(service: str, env_hint: str, docker_hint: str, tried: list[str]) -> str:
    return "\n".join(
        [
            f"No {service} for the integration tests. Provide one in any of these ways:",
            f"  - {env_hint}",
            f"  - {docker_hint}",
            "  - run `python -m consumers.testing.services up` (private native Postgres and"
            " Kafka; prints the export lines)",
            "What was tried:",
            *(f"  - {line}" for line in tried),
        ]
    )


# ------------------------------------------------------------------ testcontainers

_containers: dict[str, str] = {}
_containers_lock = threading.Lock()


def _docker_error() -> str | None:
    """Return None when a Docker engine answers a ping, else why not (cheap: ~0.3 s)."""
    # docker-py leaves a socket unclosed when the daemon is absent; finalise it while
    # ResourceWarning is ignored, or pytest's filterwarnings=error reports it later.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = importlib.import_module("docker").from_env(timeout=3)
            try:
                client.ping()
            finally:
                client.close()
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        gc.collect()
    return error


def _testcontainers_module(name: str) -> ModuleType:
    # testcontainers 4.15 moved the modules to testcontainers.community and warns
    # (DeprecationWarning, an error under our pytest settings) on the old path.
    try:
        return importlib.import_module(f"testcontainers.community.{name}")
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module(f"testcontainers.{name}")


def _from_container(key: str, start: Callable[[], tuple[Any, str]]) -> str:
    """One container per service per process, stopped at exit (Ryuk reaps it otherwise)."""
    with _containers_lock:
        if key not in _containers:
            container, address = start()
            atexit.register(container.stop)
            _containers[key] = address
        return _containers[key]


def _start_postgres_container() -> tuple[Any, str]:
    module = _testcontainers_module("postgres")
    container = module.PostgresContainer(
        POSTGRES_IMAGE, username=_PG_ROLE, password=_PG_ROLE, dbname=_PG_DATABASE, driver=None
    )
    container.start()
    return container, str(container.get_connection_url())


def _start_kafka_container() -> tuple[Any, str]:
    module = _testcontainers_module("kafka")
    container = (
        module.KafkaContainer(KAFKA_IMAGE)
        .with_kraft()
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    container.start()
    return container, str(container.get_bootstrap_server())


# ------------------------------------------------------------------------- helpers


def _progress(message: str) -> None:
    # stderr, so `eval "$(python -m consumers.testing.services up)"` sees only exports.
    print(f"onceflow-services: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise start/stop across processes so two callers never start two servers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _free_ports(count: int) -> list[int]:
    # Hold all sockets open together so the ports differ from each other.
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _ensure_port_free(port: int, service: str, record: Path) -> None:
    if _listening(port):
        raise ServiceUnavailable(
            f"port {port} recorded in {record} for the native {service} is in use by another"
            f" process; stop that process or delete {record.parent} to start afresh"
        )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    return f"last lines of {path}:\n" + "\n".join(f"    {line}" for line in text)


@dataclass(frozen=True)
class _OsUser:
    name: str
    uid: int
    gid: int


def _run(
    cmd: Sequence[str | Path],
    *,
    what: str,
    timeout: float,
    as_user: _OsUser | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run a setup command, returning stdout; on failure raise with its output tail."""
    args = [str(part) for part in cmd]
    try:
        if as_user is None:
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
            )
        else:
            done = subprocess.run(
                args,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=cwd,
                env=env,
                user=as_user.uid,
                group=as_user.gid,
                extra_groups=[],
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceUnavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-20:]
        raise ServiceUnavailable(
            f"{what} failed (exit {done.returncode}): {' '.join(args)}\n"
            + "\n".join(f"    {line}" for line in output)
        )
    return done.stdout


# ----------------------------------------------------------------- native Postgres


def _postgres_bindir(version: str | None) -> Path | None:
    """Find server binaries: Debian's versioned dirs first, then whatever is on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    if pg_ctl := shutil.which("pg_ctl"):
        candidates.append(Path(pg_ctl).resolve().parent)
    for bindir in candidates:
        if not all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            continue
        if version is None or _postgres_major(bindir) == version:
            return bindir
    return None


def _postgres_major(bindir: Path) -> str:
    out = _run([bindir / "pg_ctl", "--version"], what="pg_ctl --version", timeout=30)
    return out.split()[-1].split(".")[0]  # "pg_ctl (PostgreSQL) 15.14" -> "15"


def _install_postgres() -> None:
    """A fresh CI machine may lack Postgres: install it from the Debian packages."""
    if shutil.which("apt-get") is None:
        raise ServiceUnavailable("no PostgreSQL server binaries found and no apt-get to install")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _progress("no PostgreSQL server binaries found; running apt-get install -y postgresql")
    _run([*sudo, "apt-get", "update", "-q"], what="apt-get update", timeout=_SETUP_TIMEOUT, env=env)
    _run(
        [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
        what="apt-get install postgresql",
        timeout=_SETUP_TIMEOUT,
        env=env,
    )


def _service_user() -> _OsUser | None:
    """The OS user to run Postgres as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(_PG_OS_USER)
    except KeyError:
        _progress(f"creating system user {_PG_OS_USER!r} to run Postgres (it refuses root)")
        _run(
            ["useradd", "--system", "--user-group", "--shell", "/usr/sbin/nologin", _PG_OS_USER],
            what="useradd",
            timeout=60,
        )
        entry = pwd.getpwnam(_PG_OS_USER)
    return _OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _traversable(path: Path, user: _OsUser) -> bool:
    """Whether ``user`` may reach ``path`` (e.g. not below root's 0700 home)."""
    for directory in [path, *path.parents]:
        mode = directory.stat()
        if mode.st_uid == user.uid:
            bit = 0o100
        elif mode.st_gid == user.gid:
            bit = 0o010
        else:
            bit = 0o001
        if not mode.st_mode & bit:
            return False
    return True


class NativePostgres:
    """A private Postgres cluster for tests, kept under the state dir between sessions.

    Trust auth on 127.0.0.1 only, superuser role ``onceflow``, database ``onceflow``.
    fsync and synchronous_commit stay on: Onceflow's crash tests are about durability.
    """

    def __init__(self, state_dir: Path | None = None) -> None:
        """Describe (not start) the cluster kept under ``state_dir``."""
        self._home = (state_dir or default_state_dir()) / "postgres"
        self._port_file = self._home / "port"
        self._cluster_file = self._home / "cluster-dir"

    @property
    def url(self) -> str:
        """Server URL of the cluster (valid once ``start()`` has run once)."""
        return f"postgresql://{_PG_ROLE}@127.0.0.1:{self._port()}/{_PG_DATABASE}"

    @property
    def cluster_dir(self) -> Path:
        """Directory holding ``data/`` and ``postgres.log``."""
        if self._cluster_file.exists():
            return Path(self._cluster_file.read_text().strip())
        return self._home / "cluster"

    def is_running(self) -> bool:
        """Whether the cluster accepts connections."""
        return self._port_file.exists() and self._answers(self._url_for("postgres"))

    def start(self) -> None:
        """Start the cluster, creating it on first use; reuse it if already answering."""
        with _file_lock(self._home / "lock"):
            self._start_locked()

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: sessions are disconnected, data kept)."""
        with _file_lock(self._home / "lock"):
            self._stop_locked()

    def restart(self) -> None:
        """Fast stop and start again on the same port with the same data."""
        with _file_lock(self._home / "lock"):
            self._stop_locked()
            self._start_locked()

    def _port(self) -> int:
        try:
            return int(self._port_file.read_text())
        except FileNotFoundError:
            raise ServiceUnavailable(
                f"native Postgres under {self._home} was never started; call start()"
            ) from None

    def _url_for(self, database: str) -> str:
        return f"postgresql://{_PG_ROLE}@127.0.0.1:{self._port()}/{database}"

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
                conn.execute("select 1")
        except psycopg.Error:
            return False
        return True

    def _start_locked(self) -> None:
        if self.is_running():
            return
        user = _service_user()
        data = self.cluster_dir / "data"
        version = (
            (data / "PG_VERSION").read_text().strip() if (data / "PG_VERSION").exists() else None
        )
        bindir = _postgres_bindir(version)
        if bindir is None and version is None:
            _install_postgres()
            bindir = _postgres_bindir(None)
        if bindir is None:
            wanted = (
                f"PostgreSQL {version} (the data in {data} was made by it)"
                if version
                else "PostgreSQL"
            )
            raise ServiceUnavailable(f"no server binaries for {wanted}")
        if version is None:
            self._init_cluster(bindir, user)
        _ensure_port_free(self._port(), "Postgres", self._port_file)
        log = self.cluster_dir / "postgres.log"
        _progress(f"starting Postgres on 127.0.0.1:{self._port()} (log: {log})")
        try:
            self._pg_ctl(
                bindir, user, "start", "-l", str(log), "-w", "-t", str(int(_PG_READY_TIMEOUT))
            )
        except ServiceUnavailable as exc:
            raise ServiceUnavailable(f"{exc}\n{_tail(log)}") from None
        deadline = time.monotonic() + _PG_READY_TIMEOUT
        while not self._answers(self._url_for("postgres")):
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"Postgres at {self.url} did not accept connections within"
                    f" {_PG_READY_TIMEOUT:.0f}s\n{_tail(log)}"
                )
            time.sleep(0.2)
        with psycopg.connect(self._url_for("postgres"), autocommit=True) as conn:
            if (
                conn.execute(
                    "select 1 from pg_database where datname = %s", [_PG_DATABASE]
                ).fetchone()
                is None
            ):
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(_PG_DATABASE)))

    def _stop_locked(self) -> None:
        data = self.cluster_dir / "data"
        try:
            pid = int((data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return  # never started, or stopped cleanly
        if not _process_matches(pid, str(data)):
            return  # stale pid file of a crashed server: the next start() copes with it
        bindir = _postgres_bindir((data / "PG_VERSION").read_text().strip())
        if bindir is None:
            raise ServiceUnavailable(f"no PostgreSQL server binaries to stop {data}")
        self._pg_ctl(bindir, _service_user(), "stop", "-m", "fast", "-w", "-t", "60")

    def _pg_ctl(self, bindir: Path, user: _OsUser | None, *args: str) -> None:
        _run(
            [bindir / "pg_ctl", "-D", self.cluster_dir / "data", *args],
            what=f"pg_ctl {args[0]}",
            timeout=_PG_READY_TIMEOUT + 30,
            as_user=user,
            cwd=self.cluster_dir,
            env=_postgres_env(),
        )

    def _init_cluster(self, bindir: Path, user: _OsUser | None) -> None:
        self._home.mkdir(parents=True, exist_ok=True)
        cluster = self._home / "cluster"
        if user is not None and not _traversable(self._home, user):
            # Root's home is 0700, so the postgres user cannot reach a data dir there.
            digest = hashlib.sha256(str(self._home.resolve()).encode()).hexdigest()[:12]
            cluster = Path("/var/tmp") / f"onceflow-postgres-{digest}"
        if cluster.exists():
            shutil.rmtree(cluster)  # debris of an initdb that did not finish
        cluster.mkdir(mode=0o700, parents=True)
        if user is not None:
            os.chown(cluster, user.uid, user.gid)
        self._cluster_file.write_text(f"{cluster}\n")
        (port,) = _free_ports(1)
        self._port_file.write_text(f"{port}\n")
        _progress(f"creating a Postgres cluster in {cluster}")
        data = cluster / "data"
        _run(
            [
                bindir / "initdb",
                "-D",
                data,
                "-U",
                _PG_ROLE,
                "--auth-local=trust",
                "--auth-host=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            what="initdb",
            timeout=_SETUP_TIMEOUT,
            as_user=user,
            cwd=cluster,
            env=_postgres_env(),
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": "''",  # TCP only: no socket-path length limits
            "max_connections": "300",  # many consumer processes in crash tests
            "shared_buffers": "128MB",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n# onceflow test cluster (fsync, synchronous_commit left on)\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())


def _postgres_env() -> dict[str, str]:
    # PGPORT, PGDATA & co. from the caller's shell must not redirect our private cluster.
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


# -------------------------------------------------------------------- native Kafka

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
    <!-- Kafka's pom declares no logging backend; the Kafka distribution ships these. -->
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version>
    </dependency>
    <dependency>
      <groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version>
    </dependency>
  </dependencies>
</project>
"""


class NativeKafka:
    """A private single-node KRaft Kafka broker for tests, run from Maven Central jars.

    Broker and controller in one JVM, listening on 127.0.0.1 only, topics never
    auto-created (an unknown topic is an error, as in production).
    """

    def __init__(self, state_dir: Path | None = None) -> None:
        """Describe (not start) the broker kept under ``state_dir``."""
        self._home = (state_dir or default_state_dir()) / "kafka"
        self._libs = self._home / "libs"
        self._config = self._home / "server.properties"
        self._log = self._home / "broker.log"
        self._pid_file = self._home / "broker.pid"
        self._ports_file = self._home / "ports.json"

    @property
    def bootstrap(self) -> str:
        """Bootstrap address (valid once ``start()`` has run once)."""
        return f"127.0.0.1:{self._ports()['broker']}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, or None (crash tests SIGKILL it)."""
        try:
            pid = int(self._pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _process_matches(pid, str(self._config)) else None

    def is_running(self) -> bool:
        """Whether the broker process is alive."""
        return self.pid is not None

    def start(self) -> None:
        """Start the broker (fetching jars on first use); reuse it if already running."""
        with _file_lock(self._home / "lock"):
            self._start_locked()

    def stop(self) -> None:
        """Stop the broker: SIGTERM for a controlled shutdown, SIGKILL after a budget."""
        with _file_lock(self._home / "lock"):
            self._stop_locked()

    def restart(self) -> None:
        """Stop and start again with the same ports and data."""
        with _file_lock(self._home / "lock"):
            self._stop_locked()
            self._start_locked()

    def _ports(self) -> dict[str, int]:
        try:
            ports: dict[str, int] = json.loads(self._ports_file.read_text())
        except FileNotFoundError:
            raise ServiceUnavailable(
                f"native Kafka under {self._home} was never started; call start()"
            ) from None
        return ports

    def _start_locked(self) -> None:
        if (pid := self.pid) is not None:
            self._wait_ready(pid)
            return
        java = shutil.which("java")
        if java is None:
            raise ServiceUnavailable(
                "no `java` on PATH; install Java 17+ (apt-get install -y openjdk-17-jre-headless)"
            )
        self._home.mkdir(parents=True, exist_ok=True)
        self._ensure_libs()
        if not self._ports_file.exists():
            broker, controller = _free_ports(2)
            self._ports_file.write_text(json.dumps({"broker": broker, "controller": controller}))
        for port in self._ports().values():
            _ensure_port_free(port, "Kafka", self._ports_file)
        self._write_config()
        jvm = [
            java,
            f"-Dlog4j.configuration=file:{self._home / 'log4j.properties'}",
            "-cp",
            f"{self._libs}/*",
        ]
        if not (self._home / "data" / "meta.properties").exists():
            _progress(f"formatting Kafka storage in {self._home / 'data'}")
            _run(
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                    _cluster_id(),
                    "-c",
                    self._config,
                ],
                what="kafka StorageTool format",
                timeout=120,
                cwd=self._home,
            )
        _progress(f"starting Kafka on {self.bootstrap} (log: {self._log})")
        # Detached through a shell that exits at once: the JVM is nobody's child here,
        # so it outlives this process without leaving zombies or ResourceWarnings.
        launcher = 'out="$1"; shift; "$@" >"$out" 2>&1 </dev/null & echo $!'
        out = _run(
            [
                "/bin/sh",
                "-c",
                launcher,
                "sh",
                self._home / "broker.out",
                *jvm[:1],
                "-Xmx512m",
                "-XX:+ExitOnOutOfMemoryError",
                *jvm[1:],
                "kafka.Kafka",
                self._config,
            ],
            what="launching Kafka",
            timeout=30,
            cwd=self._home,
        )
        pid = int(out.strip())
        self._pid_file.write_text(f"{pid}\n")
        self._wait_ready(pid)

    def _stop_locked(self) -> None:
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, str(self._config), _KAFKA_STOP_BUDGET):
                _progress(
                    f"Kafka (pid {pid}) ignored SIGTERM for {_KAFKA_STOP_BUDGET:.0f}s; killing"
                )
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, str(self._config), 10.0)
        self._pid_file.unlink(missing_ok=True)

    def _wait_ready(self, pid: int) -> None:
        """Wait until the broker answers a metadata request."""
        # log_level 0: librdkafka would print every refused connection while it boots.
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + _KAFKA_READY_TIMEOUT
        while True:
            if not _process_matches(pid, str(self._config)):
                raise ServiceUnavailable(
                    f"Kafka (pid {pid}) exited while starting\n{_tail(self._log)}"
                    f"\n{_tail(self._home / 'broker.out')}"
                )
            with contextlib.suppress(Exception):
                if admin.list_topics(timeout=1.0).brokers:
                    return
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"Kafka at {self.bootstrap} (pid {pid}) did not answer within"
                    f" {_KAFKA_READY_TIMEOUT:.0f}s\n{_tail(self._log)}"
                )
            time.sleep(0.2)

    def _ensure_libs(self) -> None:
        if (self._libs / ".complete").exists():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceUnavailable("no `mvn` on PATH to fetch the Kafka jars; install Maven")
        build = self._home / "maven"
        build.mkdir(parents=True, exist_ok=True)
        (build / "pom.xml").write_text(_POM)
        partial = self._home / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        _progress(
            f"fetching Kafka {KAFKA_VERSION} jars with Maven into {self._libs}"
            " (first start only; can take a minute)"
        )
        started = time.monotonic()
        _run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                build / "pom.xml",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ],
            what="mvn dependency:copy-dependencies",
            timeout=_SETUP_TIMEOUT,
            cwd=build,
        )
        shutil.rmtree(self._libs, ignore_errors=True)
        partial.rename(self._libs)
        (self._libs / ".complete").touch()
        jars = len(list(self._libs.glob("*.jar")))
        _progress(f"fetched {jars} jars in {time.monotonic() - started:.0f}s")

    def _write_config(self) -> None:
        ports = self._ports()
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
        }
        self._config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (self._home / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
            f"log4j.appender.file.File={self._log}\n"
            "log4j.appender.file.MaxFileSize=20MB\n"
            "log4j.appender.file.MaxBackupIndex=2\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )


def _cluster_id() -> str:
    # Kafka's own Uuid.randomUuid() format; it too avoids a leading "-" (CLI parsing).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _process_matches(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and its command line contains ``marker`` (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
        try:  # no /proc (macOS): liveness only
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    except OSError:
        return False
    return marker.encode() in cmdline  # a zombie's cmdline is empty


def _wait_gone(pid: int, marker: str, budget: float) -> bool:
    deadline = time.monotonic() + budget
    while _process_matches(pid, marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
