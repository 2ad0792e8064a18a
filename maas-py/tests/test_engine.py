"""The embedded engine end to end: batches run on the simulated fleet through the same
maas.v1 service a server runs, with typed results, errors with details, pandas, threads,
the GIL released and Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pandas as pd
import pytest

import maas


def test_a_reimage_runs_end_to_end_with_events_results_and_stats(engine: maas.Engine) -> None:
    sub = engine.submit(["sim[000001-000006].dc1", "sim[000001-000004].dc2"], "reimage:ubuntu-24.04", priority="high")
    assert isinstance(sub, maas.Submission) and sub.created and sub.batch_id
    events = list(engine.watch(sub.batch_id))
    kinds = [e.kind for e in events]
    assert kinds[0] == "batch_accepted" and kinds[-1] == "batch_completed", kinds
    assert sorted(e.host for e in events if e.kind == "host_succeeded") == sorted(
        [f"sim{i:06}.dc1" for i in range(1, 7)] + [f"sim{i:06}.dc2" for i in range(1, 5)]
    )
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert all(e.at.tzinfo is not None and e.batch_id == sub.batch_id for e in events)

    batch = engine.wait(sub.batch_id, timeout=30, progress=False)
    assert batch.state == "completed" and batch.finished and batch.succeeded
    assert (batch.counts.succeeded, batch.counts.total) == (10, 10)
    assert {h.state for h in batch.hosts} == {"succeeded"} and len(batch.hosts) == 10
    assert batch.created_at.tzinfo == timezone.utc and batch.finished_at is not None
    assert batch.created_at <= batch.finished_at <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert "reimage completed by notebook: 10/10 done, 10 succeeded" in repr(batch)

    stats = engine.stats()
    assert stats.succeeded == 10 and stats.success_rate == 1.0 and stats.batches_by_state == {"completed": 1}
    assert {d.step for d in stats.steps} >= {"power_cycle", "await_install"}, stats.steps
    sites = {s.site: s for s in engine.active()}
    assert set(sites) == {"dc1", "dc2"} and all(s.live_workers == 4 and s.hosts_in_flight == 0 for s in sites.values())


def test_to_records_loads_into_pandas_with_aware_timestamps(engine: maas.Engine) -> None:
    ids = [engine.submit(f"sim0000{i:02}.dc1", "power-cycle").batch_id for i in range(1, 4)]
    for i in ids:
        engine.wait(i, timeout=30, progress=False)
    frame = pd.DataFrame(engine.batches().to_records())
    assert list(frame["id"]) == ids[::-1], "newest first"
    assert {"id", "action", "state", "succeeded", "failed", "created_at", "finished_at"} <= set(frame.columns)
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert frame["succeeded"].sum() == 3 and (frame["action"] == "power_cycle").all()
    hosts = engine.hosts(site="dc2").to_dataframe()
    assert len(hosts) == 40 and set(hosts["pool"]) == {"web"} and set(hosts["sku"]) == {"gen10", "gen11"}
    steps = pd.DataFrame(engine.stats().steps.to_records())
    assert {"step", "p50_seconds", "p99_seconds", "count"} <= set(steps.columns) and steps["count"].sum() > 0
    events = pd.DataFrame([e.to_dict() for e in engine.watch(ids[0])])
    assert "host" in events.columns and str(events["at"].dt.tz) == "UTC"


def test_refusals_carry_their_details_and_change_nothing(engine: maas.Engine) -> None:
    holder = engine.submit("sim[000001-000003].dc1", "reimage:ubuntu-24.04", not_before=datetime.now() + timedelta(hours=1))
    with pytest.raises(maas.OverlapError) as overlap:
        engine.submit("sim[000002-000005].dc1", "reboot")
    e = overlap.value
    assert e.hosts == ["sim000002.dc1", "sim000003.dc1"] and e.batches == [holder.batch_id]
    assert e.code == "FailedPrecondition" and isinstance(e, maas.ValidationError)
    assert e.conflicts[0] == maas.Conflict("sim000002.dc1", holder.batch_id)

    with pytest.raises(maas.ValidationError) as invalid:
        engine.submit(["sim000010.dc1", "ghost1.dc9", "web[5-"], "reboot")
    report = invalid.value.report
    assert report is not None and report.unknown_hosts == ["ghost1.dc9"]
    assert any("web[5-" in o for o in report.other), report
    assert not isinstance(invalid.value, maas.OverlapError) and invalid.value.code == "InvalidArgument"
    assert "ghost1.dc9" in str(invalid.value)

    dry = engine.dry_run(["sim000002.dc1", "sim000020.dc1"], "power-off")
    assert not dry.acceptable and dry.problems is not None and dry.problems.conflicts[0].hostname == "sim000002.dc1"
    assert dry.hosts == ["sim000002.dc1", "sim000020.dc1"] and dry.plan[0] == "preflight"
    assert [b.id for b in engine.batches()] == [holder.batch_id], "refusals and dry runs write nothing"


def test_bad_arguments_are_named_before_anything_is_sent(engine: maas.Engine) -> None:
    with pytest.raises(maas.ValidationError, match='unknown action "nuke"'):
        engine.submit("sim000001.dc1", "nuke")
    with pytest.raises(maas.ValidationError, match='unknown priority "asap"'):
        engine.submit("sim000001.dc1", "reboot", priority="asap")
    with pytest.raises(maas.ValidationError, match="hosts is empty"):
        engine.submit([], "reboot")
    with pytest.raises(maas.ValidationError, match="hostlist strings"):
        engine.submit([1, 2], "reboot")  # type: ignore[list-item]
    with pytest.raises(maas.ValidationError, match="not a batch id"):
        engine.batch("nope")
    with pytest.raises(maas.NotFound):
        engine.batch("01a1ffbe-0669-7000-8b04-73016394d8ff")
    with pytest.raises(maas.ValidationError, match='unknown key "laser"'):
        maas.Engine.memory(faults={"laser": 1})
    with pytest.raises(maas.ValidationError, match="not a probability"):
        maas.Engine.memory(faults={"busy": 2})
    with pytest.raises(maas.ValidationError, match="at least 1"):
        maas.Engine.memory(hosts_per_site=0)
    assert engine.batches() == []


def test_pause_resume_cancel_and_invalid_state(engine: maas.Engine) -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    b = engine.submit("sim[000001-000005].dc2", "reboot", not_before=later)
    assert engine.pause(b.batch_id).state == "paused"
    assert engine.resume(b.batch_id).state == "running"
    engine.cancel(b.batch_id, reason="changed my mind")
    final = engine.wait(b.batch_id, timeout=30, progress=False)
    assert final.state == "cancelled" and final.counts.cancelled == 5
    with pytest.raises(maas.InvalidState):
        engine.resume(b.batch_id)
    # The hosts are free again.
    assert engine.dry_run("sim[000001-000005].dc2", "reboot").acceptable


def test_idempotency_key_returns_the_first_batch_or_refuses_another_request(engine: maas.Engine) -> None:
    first = engine.submit("sim000007.dc1", "power-on", idempotency_key="change-42")
    again = engine.submit("sim000007.dc1", "power-on", idempotency_key="change-42")
    assert again.batch_id == first.batch_id and first.created and not again.created
    with pytest.raises(maas.IdempotencyConflict, match="change-42"):
        engine.submit("sim000008.dc1", "power-on", idempotency_key="change-42")


def test_failures_pause_the_batch_and_raise_a_ticket() -> None:
    with maas.Engine.memory(hosts_per_site=10, faults={"install_failure": 1.0, "install_seconds": (0.05, 0.1)}) as e:
        b = e.submit("sim[000001-000006].dc1", "reimage:ubuntu-24.04", failure_budget=2, max_in_flight=3)
        with pytest.raises(maas.WaitTimeout) as timeout:
            e.wait(b.batch_id, timeout=4, progress=False)
        seen = timeout.value.batch
        assert seen is not None and seen.state == "paused" and seen.counts.failed >= 3, seen
        assert "failure budget" in seen.pause_reason or "failure_budget" in seen.pause_reason, seen.pause_reason
        # One failure-budget ticket for the batch, and one install_failed ticket per host
        # whose installer reported failure.
        tickets = e.tickets()
        kinds = sorted(t.kind for t in tickets)
        assert {t.batch_id for t in tickets} == {b.batch_id}
        assert kinds.count("failure_budget") == 1 and kinds.count("install_failed") == seen.counts.failed, kinds
        frame = pd.DataFrame(tickets.to_records())
        assert set(frame["batch_id"]) == {b.batch_id} and len(frame) == len(tickets)


def test_a_sqlite_engine_keeps_its_batches_and_hosts_across_restarts(tmp_path) -> None:
    db = tmp_path / "rehearsal.db"
    with maas.Engine.sqlite(db, hosts_per_site=10) as e:
        done = e.submit("sim[000001-000002].dc1", "power-off")
        e.wait(done.batch_id, timeout=30, progress=False)
        e.set_host_state("sim000009.dc1", "defunct")
    with maas.Engine.sqlite(db, hosts_per_site=10) as e:
        assert [b.id for b in e.batches()] == [done.batch_id]
        assert e.batch(done.batch_id).state == "completed"
        assert {h.hostname: h.state for h in e.hosts()}["sim000009.dc1"] == "defunct"


def test_four_threads_submit_at_once(engine: maas.Engine) -> None:
    barrier = threading.Barrier(4)
    results: dict = {}
    errors: list = []

    def submitter(n: int) -> None:
        try:
            barrier.wait()
            mine = [engine.submit(f"sim0000{10 * n + i:02}.dc1", "power-cycle").batch_id for i in range(1, 6)]
            # Everyone also races for the same host: exactly one wins.
            try:
                mine.append(engine.submit("sim000040.dc2", "reimage:ubuntu-24.04").batch_id)
            except maas.OverlapError as e:
                results[f"lost{n}"] = e.batches
            results[n] = mine
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    ids = [i for n in range(4) for i in results[n]]
    assert len(ids) == len(set(ids)) == 21, "20 disjoint batches and one winner of the race"
    winner = [i for n in range(4) for i in results[n][5:]]
    assert len(winner) == 1 and all(results[f"lost{n}"] == winner for n in range(4) if f"lost{n}" in results)
    for i in ids:
        assert engine.wait(i, timeout=60, progress=False).state == "completed"


def _drained(engine: maas.Engine, batch_id: str):
    """The native event stream of a batch that waits for its not_before, past the events
    of its submission: the next call blocks."""
    stream = engine._session.watch(batch_id, 0)
    for _ in range(10):
        if stream.next(0.5)[0] == "idle":
            return stream
    raise AssertionError("the batch kept producing events")


def test_blocking_calls_release_the_gil(engine: maas.Engine) -> None:
    b = engine.submit("sim000001.dc1", "reboot", not_before=datetime.now(timezone.utc) + timedelta(hours=1))
    stream = _drained(engine, b.batch_id)
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    counter = threading.Thread(target=count)
    counter.start()
    started = time.monotonic()
    assert stream.next(1.0) == ("idle", None)
    stop.set()
    counter.join()
    assert time.monotonic() - started >= 0.9
    assert ticks > 10_000, f"Python ran only {ticks} loop iterations while the call blocked"
    stream.close()


def _interrupt_in(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """Python's own SIGINT handler, whatever this process inherited: started from a
    background job, SIGINT arrives ignored and Ctrl-C would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_interrupts_a_wait_and_a_long_native_call(engine: maas.Engine, sigint_raises: None) -> None:
    b = engine.submit("sim000002.dc1", "reboot", not_before=datetime.now(timezone.utc) + timedelta(hours=1))
    started = time.monotonic()
    _interrupt_in(0.5)
    with pytest.raises(KeyboardInterrupt):
        engine.wait(b.batch_id, timeout=60, progress=True)
    assert time.monotonic() - started < 5

    stream = _drained(engine, b.batch_id)
    started = time.monotonic()
    _interrupt_in(0.5)
    with pytest.raises(KeyboardInterrupt):
        stream.next(60.0)
    assert time.monotonic() - started < 5, "the Rust side lets Python handle the signal while it blocks"
    # The engine is still usable afterwards.
    assert engine.batch(b.batch_id).state == "running"


def test_a_request_asks_for_the_console_check_whatever_the_default() -> None:
    # Every BMC command times out: only the console check notices before acceptance.
    with maas.Engine.memory(hosts_per_site=4, faults={"timeout": 1.0}) as silent:
        with pytest.raises(maas.ValidationError, match="BMC console check failed"):
            silent.submit("sim000001.dc1", "reboot", console_check=True)
        assert silent.dry_run("sim000001.dc1", "reboot").acceptable, "the default: no check"
