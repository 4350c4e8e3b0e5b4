"""The faults of a chaos run, and the consumer services they are done to.

`Chaos` starts the group's services (`Member`s), restarts any that exits by
itself, and injects one fault at a time, each logged as a `Fault`: `kill`,
`zombie`, `pg_restart`, `kafka_restart`, `storm` (see `bench.chaos`).
`schedule` picks when each comes; `native_services` finds the Postgres and
Kafka the restarts may stop.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.chaos_config import APP, ROOT, ChaosConfig, ChaosError, Say
from consumers.testing import ConsumerService
from consumers.testing._services import (
    NativeKafka,
    NativePostgres,
    ServiceUnavailable,
    default_state_dir,
)


@dataclass(frozen=True)
class Fault:
    at: float  # seconds since production started
    kind: str
    target: str
    took: float

    def line(self) -> str:
        return f"{self.at:7.1f}s  {self.kind:<13} {self.target} (took {self.took:.1f}s)"


# ------------------------------------------------------------------ the services


class Member:
    """One consumer service of the group, restartable under a new executor ID."""

    def __init__(self, name: str, env: dict[str, str | None], log_dir: Path) -> None:
        self.name = name
        self.generation = 0
        self.service = ConsumerService(
            APP,
            env={**env, "ONCEFLOW_EXECUTOR_ID": self.executor_id},
            pythonpath=[ROOT],
            args=["--stop-timeout", "5", "--progress-every", "5"],
            log_path=log_dir / f"{name}.log",
        )
        self.expected_down = False

    @property
    def executor_id(self) -> str:
        return f"chaos-{self.name}-g{self.generation}"

    def new_identity(self) -> None:
        self.generation += 1
        self.service.env["ONCEFLOW_EXECUTOR_ID"] = self.executor_id


class Chaos:
    """The services of a run, and the faults done to them."""

    def __init__(
        self,
        config: ChaosConfig,
        env: dict[str, str | None],
        log_dir: Path,
        rng: random.Random,
        say: Say,
        natives: tuple[NativePostgres, NativeKafka] | None,
    ) -> None:
        self.config, self.env, self.log_dir, self.rng, self.say = config, env, log_dir, rng, say
        self.natives = natives
        self.members = [Member(f"s{i}", env, log_dir) for i in range(config.services)]
        self.extras: list[ConsumerService] = []
        self.unexpected_exits: list[str] = []
        self.faults: list[Fault] = []
        self.zombies = 0

    def start(self) -> None:
        for m in self.members:
            m.service.start()
        for m in self.members:
            m.service.wait_for_output("assigned", timeout=90)

    def supervise(self, elapsed: float) -> None:
        """Restart a member that exited by itself (a bug worth reporting, not a fault)."""
        for m in self.members:
            if not m.expected_down and not m.service.is_alive():
                code = m.service.returncode
                line = f"{elapsed:7.1f}s  {m.name} exited by itself (code {code}); restarted"
                self.unexpected_exits.append(f"{line}\n{m.service.tail(15)}")
                self.say(f"chaos: {line} (log {m.service.log_path})")
                m.service.start()

    def inject(self, kind: str, t0: float) -> Fault:
        start = time.monotonic()
        target = getattr(self, f"_{kind}")()
        fault = Fault(start - t0, kind, target, time.monotonic() - start)
        self.faults.append(fault)
        self.say(f"chaos: fault {len(self.faults):>2} {fault.line()}")
        return fault

    def _pick(self) -> Member:
        alive = [m for m in self.members if m.service.is_alive()]
        return self.rng.choice(alive or self.members)

    def _kill(self) -> str:
        m = self._pick()
        pid = m.service.pid
        m.expected_down = True
        m.service.kill()
        down = self.rng.uniform(0.0, 2.0)
        time.sleep(down)
        same = self.rng.random() < 0.5
        if not same:
            m.new_identity()  # its old work is taken over after the lease
        m.service.start()  # same ID: it hands its old work back at launch
        m.expected_down = False
        how = "same executor ID" if same else f"new executor ID {m.executor_id}"
        return f"{m.name} pid {pid}, down {down:.1f}s, restarted with {how}"

    def _zombie(self) -> str:
        m = self._pick()
        # Frozen past the lease (its work may be claimed) and past the Kafka
        # session (its partitions go to others, who claim that work): when it
        # thaws, its runs must find themselves fenced. Every other zombie (the
        # first one included) is aimed at a moment its checkpoint batch holds
        # an effect not yet committed: the hardest case for the executors
        # taking over its work, and for the order of that key's effects.
        # A few seconds more than both, so that the takeover has time to run
        # later records before the zombie wakes.
        floor = max(self.config.lease, self.config.session_timeout) + 3.0
        frozen = self.rng.uniform(floor, floor + 4.0)
        self.zombies += 1
        inside = self.zombies % 2 == 1 and self._freeze_inside_transaction(m.service)
        if not inside:
            m.service.pause()
        try:
            time.sleep(frozen)
        finally:
            m.service.resume()
        where = " holding an uncommitted effect" if inside else ""
        return f"{m.name} pid {m.service.pid}, frozen {frozen:.1f}s{where}"

    def _freeze_inside_transaction(self, svc: ConsumerService, budget: float = 10.0) -> bool:
        """SIGSTOP `svc` at a moment one of its Postgres sessions is inside a
        transaction holding an uncommitted effect; False (and running) if none
        came within `budget`. Each miss freezes it for some milliseconds only."""
        url = str(self.env["ONCEFLOW_DATABASE_URL"])
        port = int(conninfo_to_dict(url)["port"] or 5432)
        deadline = time.monotonic() + budget
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline and svc.pid is not None:
                proc = psutil.Process(svc.pid)
                listing = getattr(proc, "net_connections", None) or proc.connections
                ports = [
                    c.laddr.port for c in listing(kind="tcp") if c.raddr and c.raddr.port == port
                ]
                svc.pause()
                time.sleep(0.05)  # let its sessions finish the statement in hand
                row = conn.execute(_LOCKING_SESSIONS, (ports,)).fetchone()
                if row is not None and row[0] > 0:
                    return True
                svc.resume()
                time.sleep(self.rng.uniform(0.0, 0.05))
        return False

    def _pg_restart(self) -> str:
        assert self.natives is not None
        down = self.rng.uniform(0.5, 3.0)
        self.natives[0].stop()
        try:
            time.sleep(down)
        finally:
            self.natives[0].start()
        return f"postgres down {down:.1f}s"

    def _kafka_restart(self) -> str:
        assert self.natives is not None
        down = self.rng.uniform(0.5, 3.0)
        self.natives[1].stop()
        try:
            time.sleep(down)
        finally:
            self.natives[1].start()
        return f"kafka broker down {down:.1f}s"

    def _storm(self) -> str:
        joiners: list[ConsumerService] = []
        for _ in range(self.rng.randint(2, 3)):
            n = len(self.extras)
            svc = ConsumerService(
                APP,
                env={**self.env, "ONCEFLOW_EXECUTOR_ID": f"chaos-x{n}"},
                pythonpath=[ROOT],
                args=["--stop-timeout", "5", "--progress-every", "5"],
                log_path=self.log_dir / f"x{n}.log",
            )
            self.extras.append(svc)
            joiners.append(svc)
            svc.start()
            time.sleep(self.rng.uniform(0.2, 1.0))
        joined = 0
        for svc in joiners:
            try:  # each join is a rebalance; wait for it before leaving
                svc.wait_for_output("assigned", timeout=20)
                joined += 1
            except AssertionError:
                pass
        time.sleep(self.rng.uniform(0.5, 2.0))
        killed = 0
        for svc in self.rng.sample(joiners, len(joiners)):
            if self.rng.random() < 0.25:
                svc.kill()  # left without a word: Kafka notices after the session
                killed += 1
            else:
                try:
                    svc.stop(timeout=30)
                except TimeoutError:
                    killed += 1
            time.sleep(self.rng.uniform(0.1, 1.0))
        return (
            f"{len(joiners)} services joined ({joined} got partitions) and left ({killed} killed)"
        )

    def stop(self) -> None:
        """Stop every service gracefully, all at once (killed past a minute)."""

        def stop(svc: ConsumerService) -> None:
            with contextlib.suppress(TimeoutError):
                svc.stop(timeout=60)

        running = [m.service for m in self.members] + self.extras
        threads = [threading.Thread(target=stop, args=(s,)) for s in running if s.is_alive()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def close(self) -> None:
        for svc in [m.service for m in self.members] + self.extras:
            svc.close()


# Sessions of these client ports inside a transaction that has written an
# effect not yet committed and holds workflow rows locked: its checkpoint
# (FOR SHARE on the row, at the run's epoch) is written too, so no one can claim
# that workflow until this transaction ends. Any state: a pipeline cut off
# mid-way shows as "active", not "idle in transaction".
_LOCKING_SESSIONS = """
SELECT count(*) FROM pg_stat_activity a
WHERE a.client_port = ANY(%s) AND a.xact_start IS NOT NULL
  AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.mode = 'RowExclusiveLock'
              AND l.relation = 'public.chaos_effects'::regclass)
  AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.mode = 'RowShareLock'
              AND l.relation = 'onceflow.workflows'::regclass)
"""


def schedule(config: ChaosConfig, rng: random.Random) -> list[tuple[float, str]]:
    """`config.faults` (time, kind) pairs: kinds as evenly mixed as the count
    allows, in random order, at random times within production."""
    kinds = [config.kinds[i % len(config.kinds)] for i in range(config.faults)]
    rng.shuffle(kinds)
    span = config.records / config.rate
    times = sorted(rng.uniform(0.1 * span, 0.9 * span) for _ in kinds)
    return list(zip(times, kinds, strict=True))


def native_services(server_url: str, bootstrap: str) -> tuple[NativePostgres, NativeKafka]:
    """The native services behind these addresses, which the run may restart.

    Raises:
        ChaosError: the addresses name other services (environment variables,
            containers), which the run cannot restart.
    """
    postgres, kafka = NativePostgres(), NativeKafka()

    def address(url: str) -> tuple[str, str]:
        info = conninfo_to_dict(url)
        return str(info.get("host")), str(info.get("port"))

    try:
        native = (address(postgres.url), kafka.bootstrap)
    except ServiceUnavailable:
        native = None
    if native != (address(server_url), bootstrap):
        raise ChaosError(
            "pg_restart and kafka_restart restart Postgres and Kafka, which the run can do only "
            f"to the native test services kept in {default_state_dir()} "
            "(`python -m consumers.testing.services up`); this run uses Postgres at "
            f"{':'.join(address(server_url))} and Kafka at {bootstrap}. Unset "
            "ONCEFLOW_TEST_DATABASE_URL and ONCEFLOW_TEST_KAFKA (and use no Docker engine), "
            "or leave those kinds out with --kinds."
        )
    return postgres, kafka
