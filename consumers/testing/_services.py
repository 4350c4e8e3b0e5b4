"""Real Postgres and a real Kafka broker for tests: the one implementation.

Onceflow's exactly-once argument rests on real Postgres transactions and real Kafka
consumer-group semantics, so its tests (and users' tests of their own workflows) run
against the real services (DESIGN.md §8). Each service is resolved in this order:

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

import abc
import atexit
import base64
import contextlib
import fcntl
import functools
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
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Final

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
_PG_OS_USER: Final = "postgres"  # Postgres refuses to run as root
# Budgets: generous for a loaded 2-core CI machine, short enough that a broken
# service fails the run within a minute or two instead of hanging it.
_READY_TIMEOUT: Final = 60.0
_KAFKA_STOP_BUDGET: Final = 30.0  # a controlled shutdown of one KRaft node takes ~1-2 s
_SETUP_TIMEOUT: Final = 900.0  # apt-get, or a cold Maven fetch on a slow mirror


class ServiceUnavailable(RuntimeError):
    """No test service could be provided; the message says how to provide one."""


def default_state_dir() -> Path:
    """Where native services keep data, ports and logs between test sessions."""
    raw = os.environ.get(ENV_SERVICES_DIR)
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "onceflow" / "services"


def postgres_url() -> str:
    """Return a Postgres server URL for a role that may CREATE DATABASE.

    Raises:
        ServiceUnavailable: no source worked; the message lists each one's error.
    """
    return _resolve(
        "Postgres",
        ENV_DATABASE_URL,
        "postgresql://USER:PASSWORD@HOST:5432/postgres (a role allowed to CREATE DATABASE)",
        POSTGRES_IMAGE,
        _start_postgres_container,
        _native_postgres_url,
    )


def kafka_bootstrap() -> str:
    """Return the bootstrap address (``host:port``) of a Kafka broker for tests.

    Raises:
        ServiceUnavailable: no source worked; the message lists each one's error.
    """
    return _resolve(
        "Kafka",
        ENV_KAFKA,
        "HOST:9092 (a broker with auto.create.topics.enable=false)",
        KAFKA_IMAGE,
        _start_kafka_container,
        _native_kafka_bootstrap,
    )


def _resolve(
    service: str,
    env_var: str,
    env_example: str,
    image: str,
    start_container: Callable[[], tuple[Any, str]],
    start_native: Callable[[], str],
) -> str:
    if value := os.environ.get(env_var):
        return value
    tried: list[str] = []
    if (docker_error := _docker_error()) is None:
        try:
            return _from_container(service, start_container)
        except Exception as exc:  # fall through to the native service, but say why
            tried.append(f"testcontainers {image}: {_describe(exc)}")
    else:
        tried.append(f"Docker engine: {docker_error}")
    try:
        return start_native()
    except Exception as exc:
        tried.append(f"native {service}: {_describe(exc)}")
    raise ServiceUnavailable(
        "\n".join(
            [
                f"No {service} for the integration tests. Provide one in any of these ways:",
                f"  - export {env_var}={env_example}",
                f"  - start a Docker engine (testcontainers then runs {image})",
                "  - run `python -m consumers.testing.services up` (private native Postgres and"
                " Kafka; it prints the export lines)",
                "What was tried:",
                *(f"  - {line}" for line in tried),
            ]
        )
    )


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ServiceUnavailable) else f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------ testcontainers

_containers: dict[str, str] = {}
_containers_lock = threading.Lock()


@functools.cache
def _docker_error() -> str | None:
    """Return None when a Docker engine answers a ping, else why not (~0.3 s, once)."""
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
    # (DeprecationWarning: an error under our pytest settings) on the old path.
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
    container = _testcontainers_module("postgres").PostgresContainer(
        POSTGRES_IMAGE, username=_PG_ROLE, password=_PG_ROLE, dbname=_PG_DATABASE, driver=None
    )
    container.start()
    return container, str(container.get_connection_url())


def _start_kafka_container() -> tuple[Any, str]:
    container = (
        _testcontainers_module("kafka")
        .KafkaContainer(KAFKA_IMAGE)
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


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    if not text:
        return f"({path} is empty)"
    return f"last lines of {path}:\n" + "\n".join(f"    {line}" for line in text)


def _run(
    cmd: Sequence[str | Path],
    *,
    what: str,
    timeout: float,
    as_user: pwd.struct_passwd | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run a setup command, returning stdout; on failure raise with its output's tail."""
    args = [str(part) for part in cmd]
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=env,
            # Drop root for Postgres in the child itself: no PAM session or shell quoting
            # as with runuser/su, and no dependency on either being installed.
            user=as_user.pw_uid if as_user else None,
            group=as_user.pw_gid if as_user else None,
            extra_groups=[] if as_user else None,
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


def _process_matches(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and its command line contains ``marker`` (not a reused pid)."""
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()  # zombies: b""
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
    except OSError:
        return False
    try:  # no /proc (macOS): liveness only
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class _NativeService(abc.ABC):
    """A server under ``<state dir>/<name>``; start/stop/restart serialised by a file lock.

    The lock (fcntl, across processes) makes ``start()`` safe to call from concurrent
    test processes: the second caller waits and then reuses what the first started.
    """

    _name: ClassVar[str]

    def __init__(self, state_dir: Path | None = None) -> None:
        """Describe (not start) the service kept under ``state_dir``."""
        self._home = (state_dir or default_state_dir()) / self._name
        self._ports_file = self._home / "ports.json"

    @abc.abstractmethod
    def is_running(self) -> bool:
        """Whether the service is up."""

    def start(self) -> None:
        """Start the service, creating it on first use; reuse it if already running."""
        with self._lock():
            self._start_locked()

    def stop(self) -> None:
        """Stop the service, keeping its data and ports."""
        with self._lock():
            self._stop_locked()

    def restart(self) -> None:
        """Stop and start again with the same ports and data."""
        with self._lock():
            self._stop_locked()
            self._start_locked()

    @abc.abstractmethod
    def _start_locked(self) -> None: ...

    @abc.abstractmethod
    def _stop_locked(self) -> None: ...

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self._home.mkdir(parents=True, exist_ok=True)
        with (self._home / "lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield

    def _ports(self) -> dict[str, int]:
        """Ports chosen at first start and kept, so restarts keep clients' addresses."""
        try:
            ports: dict[str, int] = json.loads(self._ports_file.read_text())
        except FileNotFoundError:
            raise ServiceUnavailable(
                f"native {self._name} under {self._home} was never started; call start()"
            ) from None
        return ports

    def _claim_ports(self, *names: str) -> dict[str, int]:
        if not self._ports_file.exists():
            ports = dict(zip(names, _free_ports(len(names)), strict=True))
            self._ports_file.write_text(json.dumps(ports))
        ports = self._ports()
        for port in ports.values():
            if _listening(port):
                raise ServiceUnavailable(
                    f"port {port} recorded in {self._ports_file} for the native {self._name} is"
                    f" used by another process; stop it, or delete {self._home} to start afresh"
                )
        return ports


# ----------------------------------------------------------------- native Postgres


class NativePostgres(_NativeService):
    """A private Postgres cluster for tests.

    Trust auth on 127.0.0.1 only, superuser role ``onceflow``, database ``onceflow``.
    fsync and synchronous_commit stay on: Onceflow's crash tests are about durability.
    As root, the server runs as the ``postgres`` OS user (created if missing).
    """

    _name = "postgres"

    @property
    def url(self) -> str:
        """Server URL (valid once ``start()`` has run once)."""
        return self._url(_PG_DATABASE)

    @property
    def cluster_dir(self) -> Path:
        """Directory holding ``data/`` and ``postgres.log``."""
        record = self._home / "cluster-dir"
        return Path(record.read_text().strip()) if record.exists() else self._home / "cluster"

    def is_running(self) -> bool:
        """Whether the cluster accepts connections."""
        return self._ports_file.exists() and _answers(self._url("postgres"))

    def _url(self, database: str) -> str:
        return f"postgresql://{_PG_ROLE}@127.0.0.1:{self._ports()['postgres']}/{database}"

    def _start_locked(self) -> None:
        if self.is_running():
            return
        data = self.cluster_dir / "data"
        version = (
            (data / "PG_VERSION").read_text().strip() if (data / "PG_VERSION").exists() else None
        )
        bindir = _postgres_bindir(version)
        if bindir is None and version is None:
            _install_postgres()
            bindir = _postgres_bindir(None)
        if bindir is None:
            raise ServiceUnavailable(
                f"no server binaries of PostgreSQL {version or ''}: install them"
                + (f" or delete {self.cluster_dir}, made by that version" if version else "")
            )
        port = self._claim_ports("postgres")["postgres"]
        if version is None:
            self._init_cluster(bindir)
        log = self.cluster_dir / "postgres.log"
        _progress(f"starting Postgres on 127.0.0.1:{port} (log: {log})")
        try:
            self._pg_ctl(bindir, "start", "-l", str(log), "-o", f"-p {port}")
        except ServiceUnavailable as exc:
            raise ServiceUnavailable(f"{exc}\n{_tail(log)}") from None
        if not _answers(self._url("postgres")):
            raise ServiceUnavailable(f"Postgres at {self.url} refuses connections\n{_tail(log)}")
        with psycopg.connect(self._url("postgres"), autocommit=True) as conn:
            exists = "select 1 from pg_database where datname = %s"
            if conn.execute(exists, [_PG_DATABASE]).fetchone() is None:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(_PG_DATABASE)))

    def _stop_locked(self) -> None:
        data = self.cluster_dir / "data"
        try:
            pid = int((data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return  # never started, or stopped cleanly
        if not _process_matches(pid, str(data)):
            return  # a crashed server's stale pid file: pg_ctl start copes with it
        bindir = _postgres_bindir((data / "PG_VERSION").read_text().strip())
        if bindir is None:
            raise ServiceUnavailable(f"no PostgreSQL server binaries to stop {data} with")
        # Fast: disconnect sessions and shut down cleanly, as an operator's restart would.
        self._pg_ctl(bindir, "stop", "-m", "fast")

    def _pg_ctl(self, bindir: Path, command: str, *args: str) -> None:
        # -w: return once the server accepts connections (or is down), within -t seconds.
        wait = ["-w", "-t", str(int(_READY_TIMEOUT))]
        _run(
            [bindir / "pg_ctl", "-D", self.cluster_dir / "data", command, *wait, *args],
            what=f"pg_ctl {command}",
            timeout=_READY_TIMEOUT + 30,
            as_user=_service_user(),
            cwd=self.cluster_dir,
            env=_postgres_env(),
        )

    def _init_cluster(self, bindir: Path) -> None:
        user = _service_user()
        cluster = self._home / "cluster"
        if user is not None and not _traversable(self._home, user):
            # Root's home is 0700, so the postgres user cannot reach a data dir there.
            digest = hashlib.sha256(str(self._home.resolve()).encode()).hexdigest()[:12]
            cluster = Path("/var/tmp") / f"onceflow-postgres-{digest}"
        shutil.rmtree(cluster, ignore_errors=True)  # debris of an initdb that did not finish
        cluster.mkdir(mode=0o700, parents=True)
        if user is not None:
            os.chown(cluster, user.pw_uid, user.pw_gid)
        (self._home / "cluster-dir").write_text(f"{cluster}\n")
        _progress(f"creating a Postgres cluster in {cluster}")
        initdb: list[str | Path] = [bindir / "initdb", "-D", cluster / "data", "-U", _PG_ROLE]
        initdb += ["-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=trust"]
        _run(
            initdb,
            what="initdb",
            timeout=_SETUP_TIMEOUT,
            as_user=user,
            cwd=cluster,
            env=_postgres_env(),
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",  # TCP only: no socket-path length limit
            "max_connections": "300",  # many consumer processes in crash tests
            "shared_buffers": "128MB",
        }
        with (cluster / "data" / "postgresql.conf").open("a") as conf:
            conf.write("\n# onceflow test cluster: fsync and synchronous_commit stay on\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())


def _native_postgres_url() -> str:
    server = NativePostgres()
    server.start()
    return server.url


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
            conn.execute("select 1")
    except psycopg.Error:
        return False
    return True


def _postgres_env() -> dict[str, str]:
    # PGPORT, PGDATA & co. from the caller's shell must not redirect our private cluster.
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _postgres_bindir(version: str | None) -> Path | None:
    """Find server binaries: Debian's versioned dirs (newest first), then PATH."""
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
        raise ServiceUnavailable("no PostgreSQL server binaries found, and no apt-get")
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


def _service_user() -> pwd.struct_passwd | None:
    """The OS user to run Postgres as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_PG_OS_USER)
    except KeyError:
        _progress(f"creating system user {_PG_OS_USER!r} to run Postgres (it refuses root)")
    _run(
        ["useradd", "--system", "--user-group", "--shell", "/usr/sbin/nologin", _PG_OS_USER],
        what="useradd",
        timeout=60,
    )
    return pwd.getpwnam(_PG_OS_USER)


def _traversable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may reach ``path`` by the mode bits of it and its parents."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == user.pw_uid:
            bit = 0o100
        elif st.st_gid == user.pw_gid:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return False
    return True


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
