"""Many `batch-sender run` processes on one campaign: shared schedule, staging once, crashes.

The processes are the installed console script, the results database a fresh PostgreSQL schema,
the gateway one simulator recording every accepted message; a worker is killed with SIGKILL.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from fixtures_cli import write_csv
from fixtures_db import fresh_db_url
from fixtures_sim import TEST_CREDENTIALS

from batch_sender import campaign, sources
from batch_sender.config import GatewaySettings, RunSettings
from batch_sender.gateway import GatewayClient
from batch_sender.send import scaleout
from batch_sender.send.ratelimit import RESERVE_SECONDS, SharedRateLimiter
from batch_sender.simulator import Simulator
from batch_sender.sources import Source
from batch_sender.store import Campaign, Store
from batch_sender.store.tables import recipients

# -- the shared schedule, with the database's row simulated in memory ----------------------------


class Schedule:
    """What ``Store.reserve_rate`` does to the ``rate_limits`` row, on a fake clock."""

    def __init__(self, clock: Callable[[], float], rate: float) -> None:
        self.clock = clock
        self.rate = rate
        self.next_at = 0.0
        self.calls = 0

    def reserve(self, units: float) -> float:
        self.calls += 1
        now = self.clock()
        start = max(now, self.next_at)
        self.next_at = start + units / self.rate
        return start - now


def simulate(
    limiters: int,
    seconds: float,
    *,
    rate: float,
    units: int,
    dies: dict[int, int] | None = None,
    capacity: float | None = None,
) -> tuple[list[tuple[float, int]], Schedule]:
    """Run ``limiters`` processes for ``seconds``, each sending its next request as soon as its
    limiter allows (a busy worker) — or, with ``capacity``, no sooner than ``units / capacity``
    after its previous one (a worker that can send only that many units a second by itself);
    process ``p`` in ``dies`` stops after that many requests.
    Returns (send time, units) of every request sent in time, by time, and the schedule."""
    now = [0.0]
    schedule = Schedule(lambda: now[0], rate)
    procs = [
        SharedRateLimiter(rate, schedule.reserve, clock=lambda: now[0], sleep=lambda _s: None)
        for _ in range(limiters)
    ]
    ready = [(0.0, p) for p in range(limiters)]
    sent: list[tuple[float, int]] = []
    done = Counter[int]()
    while ready and ready[0][0] < seconds:
        now[0], p = heapq.heappop(ready)
        at = now[0] + procs[p].acquire(units)
        sent.append((at, units))
        done[p] += 1
        if dies is None or done[p] < dies.get(p, sys.maxsize):
            heapq.heappush(ready, (at + (0.0 if capacity is None else units / capacity), p))
    return sorted((at, n) for at, n in sent if at < seconds), schedule


def never_faster_than(rate: float, sent: list[tuple[float, int]], burst: int) -> None:
    """Units sent up to any moment never exceed ``rate`` × elapsed plus one request's ``burst``."""
    start, total = sent[0][0], 0
    for at, n in sent:
        total += n
        assert total <= rate * (at - start) + burst + 1e-6, at


def test_processes_sharing_a_schedule_never_exceed_the_rate_together() -> None:
    rate, units, seconds = 2000.0, 100, 20.0
    sent, _ = simulate(4, seconds, rate=rate, units=units)

    never_faster_than(rate, sent, units)
    assert sum(n for _, n in sent) == pytest.approx(rate * seconds, rel=0.01)  # no slot wasted


def test_a_schedule_is_reserved_a_slice_at_a_time() -> None:
    sent, schedule = simulate(3, 10.0, rate=2000.0, units=100)  # slices of ≤ 500 units

    assert len(sent) == pytest.approx(200, abs=1)
    # a slice is a quarter second of each process's throughput: about 4 round trips a second each
    assert schedule.calls <= 10.0 / RESERVE_SECONDS * 3 + 3 * 2


def test_workers_that_cannot_each_send_at_the_rate_reach_it_together() -> None:
    # four workers of 400 one-part requests a second each (8 in flight at 20 ms), --rate 1000:
    # a slice is tokens spent at the worker's own pace, not a span of time at the account's
    rate, seconds = 1000.0, 20.0
    sent, schedule = simulate(4, seconds, rate=rate, units=1, capacity=400.0)

    never_faster_than(rate, sent, int(rate * RESERVE_SECONDS) * 4)
    steady = [n for at, n in sent if at >= 2.0]
    assert sum(steady) / (seconds - 2.0) == pytest.approx(rate, rel=0.02)
    assert schedule.calls <= seconds / RESERVE_SECONDS * 4 * 1.5  # sized to each one's share


def test_a_process_that_dies_costs_throughput_never_the_limit() -> None:
    rate, units, seconds = 1000.0, 100, 20.0
    sent, _ = simulate(3, seconds, rate=rate, units=units, dies={0: 7})

    never_faster_than(rate, sent, units)
    # only the tokens the dead process had booked and not used are lost (a slice at most)
    assert sum(n for _, n in sent) >= rate * seconds - 500


def test_no_rate_never_reserves() -> None:
    calls: list[float] = []
    limiter = SharedRateLimiter(None, lambda units: calls.append(units) or 0.0)

    assert limiter.acquire(100) == 0.0
    assert calls == []


# -- processes -----------------------------------------------------------------------------------


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL schema for the results (skipped when PostgreSQL is down, unless CI)."""
    yield from fresh_db_url("postgresql", tmp_path)


def console_script() -> str:
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the batch-sender console script is not installed (pip install -e .)")
    return exe


class SimulatorProcess:
    """``python -m batch_sender.simulator --record FILE`` in a process of its own, so that its
    clock and its pace owe nothing to the test process's threads."""

    def __init__(self, record: Path, *options: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}/soap/document_literal/webservice"
        self.record = record
        self.credentials = SimpleNamespace(**TEST_CREDENTIALS)
        args = ["--port", str(port), "--record", str(record)]
        args += [f"--{key.replace('_', '-')}={value}" for key, value in TEST_CREDENTIALS.items()]
        args += options
        self.process = subprocess.Popen(
            [sys.executable, "-m", "batch_sender.simulator", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(record.parent / "simulator.log").open("w"),
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("the simulator did not start") from None
                time.sleep(0.05)

    def accepted(self) -> int:
        """Messages accepted so far (lines of the record file)."""
        if not self.record.exists():
            return 0
        with self.record.open("rb") as f:
            return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_workers(
    count: int, args: list[str], *, sim: Simulator | SimulatorProcess, db_url: str, tmp_path: Path
) -> list[subprocess.Popen[str]]:
    """``count`` console-script ``run`` processes started at once; stderr to files in tmp_path."""
    creds = sim.credentials
    env = {
        **os.environ,
        "BATCH_SENDER_DB": db_url,
        "BATCH_SENDER_GATEWAY_URL": sim.url,
        "CLICKATELL_API_ID": str(creds.api_id),
        "CLICKATELL_USER": creds.user,
        "CLICKATELL_PASSWORD": creds.password,
    }
    exe = console_script()
    return [
        subprocess.Popen(
            [exe, "run", *args, "--json"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / f"worker-{n}.log").open("w"),
            text=True,
        )
        for n in range(count)
    ]


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    """Wait for every process; their --json summaries."""
    summaries = []
    deadline = time.monotonic() + timeout
    for proc in procs:
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        summaries.append(json.loads(out))
    return summaries


def four_with_one_killed_midway(
    args: list[str],
    *,
    sim: SimulatorProcess,
    db_url: str,
    tmp_path: Path,
    total: int,
    start: float,
    end: float,
) -> list[dict[str, Any]]:
    """Four ``run`` processes; the second is SIGKILLed once 40% of ``total`` numbers were
    accepted (within ``start`` seconds); the three survivors' summaries (within ``end``)."""
    procs = start_workers(4, args, sim=sim, db_url=db_url, tmp_path=tmp_path)
    victim = procs[1]
    deadline = time.monotonic() + start
    while sim.accepted() < total * 0.4:
        assert time.monotonic() < deadline, "the workers did not get going"
        assert victim.poll() is None, (tmp_path / "worker-1.log").read_text()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    return finish([p for p in procs if p is not victim], timeout=end)


def records(sim: Simulator | SimulatorProcess) -> list[dict[str, Any]]:
    path = sim.record if isinstance(sim, SimulatorProcess) else Path(str(sim.config.record))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def statuses(db_url: str, campaign: str) -> dict[str, int]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT status, recipients FROM campaign_summary WHERE campaign = :c"),
                {"c": campaign},
            )
            return {status: int(n) for status, n in rows}
    finally:
        engine.dispose()


def _logs(tmp_path: Path, count: int, lines: int = 15) -> str:
    """The last lines of each worker's log, for an assertion's message."""
    return "\n".join(
        f"-- worker-{n}:\n"
        + "\n".join((tmp_path / f"worker-{n}.log").read_text().splitlines()[-lines:])
        for n in range(count)
    )


def numbers(n: int) -> list[str]:
    return [str(27830000000 + i) for i in range(n)]


def test_four_processes_started_at_once_stage_the_campaign_once(
    pg_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(3000)])

    procs = start_workers(
        4, [str(src), "--text", "Hi", "--name", "once"], sim=simulator, db_url=pg_url,
        tmp_path=tmp_path,
    )  # fmt: skip
    summaries = finish(procs, timeout=60)

    assert [s["exit_code"] for s in summaries] == [0, 0, 0, 0]
    assert sorted(s["staged"] for s in summaries) == [False, False, False, True]
    assert [s["counts"] for s in summaries] == [{"sent": 3000}] * 4
    assert statuses(pg_url, "once") == {"sent": 3000}
    sent = Counter(rec["to"] for rec in records(simulator))
    assert sent == Counter(numbers(3000))  # every number once
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM campaigns")).scalar() == 1
    engine.dispose()


def steady_rate(recs: list[dict[str, Any]], *, skip_start: float, skip_end: float) -> float:
    """Messages per second between the requests arriving ``skip_start`` s after the first and
    ``skip_end`` s before the last, from the simulator's arrival times."""
    per_request: dict[str, tuple[float, int]] = {}
    for rec in recs:
        at, n = per_request.get(rec["client_message_id"], (rec["time"], 0))
        per_request[rec["client_message_id"]] = (at, n + 1)
    arrivals = sorted(per_request.values())
    first, last = arrivals[0][0] + skip_start, arrivals[-1][0] - skip_end
    window = [(at, n) for at, n in arrivals if first <= at <= last]
    # the messages of every request but the last, over the time from the first to the last
    return sum(n for _, n in window[:-1]) / (window[-1][0] - window[0][0])


@pytest.fixture
def simulator_process(tmp_path: Path) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(tmp_path / "record.jsonl")
    yield sim
    sim.stop()


@pytest.mark.slow
def test_four_workers_share_one_campaign_at_one_rate_and_survive_a_kill(
    pg_url: str, simulator_process: SimulatorProcess, tmp_path: Path
) -> None:
    total, rate = 50_000, 2000.0  # one part each: 25 s of sending
    sim = simulator_process
    src = write_csv(tmp_path / "big.csv", [(n, "x") for n in numbers(total)])
    # (the simulator accepts at once: a 104 can be trusted a second after a kill)
    args = [str(src), "--text", "Hello", "--name", "big", "--rate", str(int(rate)),
            "--lease", "3", "--max-processing", "1"]  # fmt: skip

    summaries = four_with_one_killed_midway(
        args, sim=sim, db_url=pg_url, tmp_path=tmp_path, total=total, start=60, end=80
    )

    # Every process that lived says the same. The victim's rows settled too: sent, or — for a
    # many-number request it had in flight when it died, which reached the gateway — unknown
    # with that reason (querymsg answers for one message of a request, not for each number),
    # and then the run says so with exit 4. Whether the kill hits such a request is timing: on
    # a loaded machine it often does.
    final = statuses(pg_url, "big")
    assert set(final) <= {"sent", "unknown"} and sum(final.values()) == total
    expected_exit = 4 if final.get("unknown") else 0
    told = [(s["exit_code"], s["counts"]) for s in summaries]
    assert told == [(expected_exit, final)] * 3, (final, told, _logs(tmp_path, 4))
    recs = records(sim)
    assert Counter(rec["to"] for rec in recs) == Counter(numbers(total))  # exactly once each
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        ids = dict(
            conn.execute(
                sa.text(
                    "SELECT msisdn, api_message_id FROM results WHERE api_message_id IS NOT NULL"
                )
            ).all()
        )
        unknown_why = Counter(
            conn.execute(
                sa.text("SELECT error_description FROM results WHERE status = 'unknown'")
            ).scalars()
        )
    engine.dispose()
    assert all("reached the gateway" in why for why in unknown_why), unknown_why
    assert len(ids) + sum(unknown_why.values()) == total
    recorded = {rec["to"]: rec["api_message_id"] for rec in recs}
    assert ids and all(recorded[m] == api_id for m, api_id in ids.items())
    # together the workers never went past --rate (steady part: after start-up, before the
    # tail); how close they come to it is a timing, the benchmark's (pg_workers_unique): a
    # loaded CI box ran this at 1,437 of 2,000 parts/s
    measured = steady_rate(recs, skip_start=2.0, skip_end=1.0)
    assert measured <= rate * 1.05, f"{measured:.0f} parts/s"


@pytest.mark.slow
def test_four_workers_with_distinct_texts_send_each_number_once_through_a_kill(
    pg_url: str, tmp_path: Path
) -> None:
    # a personalised campaign: every text distinct, so one request (and one row) per recipient;
    # the simulator answers after 20 ms, as in the pg_workers_unique benchmark (where the rate is
    # measured). The victim's requests carried one number each: querymsg settles them `sent`.
    total = 8000
    sim = SimulatorProcess(tmp_path / "record.jsonl", "--latency-ms", "20")
    try:
        src = write_csv(tmp_path / "unique.csv", [(n, f"N{n}") for n in numbers(total)])
        args = [str(src), "--text", "Hi {name}, your code", "--name", "unique", "--rate", "1000",
                "--concurrency", "8", "--lease", "3", "--max-processing", "1"]  # fmt: skip

        summaries = four_with_one_killed_midway(
            args, sim=sim, db_url=pg_url, tmp_path=tmp_path, total=total, start=90, end=120
        )
    finally:
        sim.stop()

    assert [s["exit_code"] for s in summaries] == [0, 0, 0]
    assert all(s["counts"] == {"sent": total} for s in summaries)
    assert statuses(pg_url, "unique") == {"sent": total}  # the victim's rows final too
    recs = records(sim)
    assert Counter(rec["to"] for rec in recs) == Counter(numbers(total))  # exactly once each
    assert len({rec["client_message_id"] for rec in recs}) == total  # one request per number
    assert all(rec["text"] == f"Hi N{rec['to']}, your code" for rec in recs)
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.text("SELECT msisdn, api_message_id FROM results")).all())
    engine.dispose()
    assert ids == {rec["to"]: rec["api_message_id"] for rec in recs}  # every row's own ID


# -- one worker among others, in the library ---------------------------------------------------

FOREIGN = "elsewhere:4242:feedbeef"  # a worker on another machine: only its lease tells


@pytest.fixture(params=["postgresql", "mariadb"])
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh results database on each engine that several machines can share."""
    yield from fresh_db_url(request.param, tmp_path)


def one_worker(
    url: str, sim: Simulator, tmp_path: Path, *, foreign: int
) -> tuple[Store, GatewayClient, RunSettings, Campaign, Callable[[], Source]]:
    """A staged 50-number campaign of which ``foreign`` rows are claimed by another machine."""
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(50)])
    settings = RunSettings(name="shared", text="Hi")
    store = Store.open(url)
    camp, _ = campaign.stage(store, sources.open_csv(src), settings)
    if foreign:
        claimed = store.claim_chunk(
            camp.id, size=foreign, client_message_id="f" * 32, worker=FOREIGN
        )
        assert claimed is not None
    creds = sim.credentials
    gateway = GatewaySettings(sim.url, str(creds.api_id), creds.user, creds.password)
    client = campaign.open_client(gateway, max_connections=4)
    return store, client, settings, camp, lambda: sources.open_csv(src)


def test_a_worker_waits_for_another_machines_rows_and_settles_them_when_its_lease_lapses(
    server_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    store, client, settings, _, source = one_worker(server_url, simulator, tmp_path, foreign=5)
    with store, client:
        result = campaign.run(
            settings, source=source(), store=store, client=client, lease=1.0, max_processing=0.5
        )

    # the other machine never sent its 5 (the gateway says so): they were requeued and sent
    assert result.counts == {"sent": 50}
    assert result.exit_code == 0
    assert Counter(rec["to"] for rec in records(simulator)) == Counter(numbers(50))


def test_a_worker_does_not_leave_rows_another_worker_is_claiming_right_now(
    server_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    """Rows another worker has locked in a claim that has not committed yet still count as
    pending, and SKIP LOCKED passes over them: the worker looks again a poll later instead of
    leaving with its summary saying 'pending' (as one of four processes once did)."""
    store, client, settings, camp, source = one_worker(server_url, simulator, tmp_path, foreign=0)
    engine = sa.create_engine(server_url, isolation_level="READ COMMITTED")
    claiming = engine.connect()
    last_five = sa.select(recipients.c.id).where(recipients.c.campaign_id == camp.id)
    locked = claiming.execute(last_five.order_by(recipients.c.id.desc()).limit(5)).scalars().all()
    claiming.commit()
    # lock exactly those rows, by primary key, as a claim in progress does (InnoDB would lock
    # every row an ORDER BY … LIMIT scan passes)
    where = recipients.c.id.in_(locked)
    claiming.execute(sa.select(recipients.c.id).where(where).with_for_update()).all()

    def commit_the_claim() -> None:  # once the worker has sent all it could claim
        deadline = time.monotonic() + 30
        while simulator.accepted_count < 45 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.1)
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)  # its lease has lapsed since
        claiming.execute(
            recipients.update()
            .where(where)
            .values(status="sending", claimed_by=FOREIGN, client_message_id="f" * 32,
                    claimed_at=an_hour_ago)
        )  # fmt: skip
        claiming.commit()

    other = threading.Thread(target=commit_the_claim)
    other.start()
    try:
        with store, client:
            result = campaign.run(
                settings, source=source(), store=store, client=client, lease=1.0, max_processing=0.5
            )
    finally:
        other.join()
        claiming.close()
        engine.dispose()

    assert result.counts == {"sent": 50}  # the other worker's 5, settled and sent: none left
    assert Counter(rec["to"] for rec in records(simulator)) == Counter(numbers(50))


def test_a_worker_gives_up_waiting_on_rows_whose_lease_stays_alive(
    server_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    store, client, settings, _, source = one_worker(server_url, simulator, tmp_path, foreign=5)
    with store, client:
        result = campaign.run(
            settings, source=source(), store=store, client=client, lease=600.0, finish_wait=1.0
        )

    assert result.counts == {"sent": 45, "sending": 5}  # not its rows to settle: still leased
    assert result.exit_code == 4


def test_a_heartbeat_keeps_a_workers_claims_leased(
    server_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    store, client, _, camp, _ = one_worker(server_url, simulator, tmp_path, foreign=5)
    with store, client:
        a_second_ago = datetime.now(UTC) - timedelta(seconds=1)
        with store.engine.begin() as conn:
            conn.execute(recipients.update().values(claimed_at=a_second_ago))
        # (lease 3 s: the settler, beating at the same moment, sees a live lease either way)
        with scaleout.Heartbeat(store, client, camp.id, FOREIGN, lease=3.0):
            time.sleep(1.5)  # a beat every second
        in_flight = store.in_flight(camp.id)

    assert len(in_flight) == 1
    claimed_at = in_flight[0].claimed_at
    assert claimed_at is not None and claimed_at > a_second_ago + timedelta(seconds=1)
