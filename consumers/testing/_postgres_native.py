"""A private native Postgres cluster for tests, from the OS packages.

`NativePostgres` finds the server binaries (Debian's versioned directories, then
PATH), installs the ``postgresql`` Debian package when there are none, creates a
cluster under the state directory on first use and keeps it between test
sessions. As root, the server runs as the ``postgres`` OS user.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
from pathlib import Path
from typing import Final

import psycopg
from psycopg import sql

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

_PG_ROLE: Final = "onceflow"
_PG_DATABASE: Final = "onceflow"
_PG_OS_USER: Final = "postgres"  # Postgres refuses to run as root


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
            # Commit times, for the benchmark's produce->complete latency.
            "track_commit_timestamp": "on",
            # Backends ask the kernel to write their evicted pages back as they
            # go, so they never pile up for its 30 s write-back: a burst a WAL
            # flush (a commit) would wait behind (bench/README.md, latency tail).
            "backend_flush_after": "'256kB'",
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
