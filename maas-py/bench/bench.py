"""maas-py benchmark harness: what the Python layer costs, and whether threads scale.

Run: ``python maas-py/bench/bench.py`` (after ``maturin develop`` or ``pip install
./maas-py``); ``--quick`` for the small run the test script does. Everything is measured
in the same run on an embedded in-memory engine with a 100-host batch, so the ratios are
what to read:

1. ``batch()`` through the typed Python API against the Rust half's raw call (JSON text
   only) and the raw call plus ``json.loads``: where a call's time goes.
2. ``dry_run`` of 100 hosts from 1 and from 4 Python threads on one engine: calls/s and the
   ratio. The GIL is released while a call is in Rust, so threads overlap; with the GIL
   held the ratio would stay at or below 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, List

import maas


def latencies(call: Callable[[], object], n: int) -> List[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append(time.perf_counter() - t)
    return out


def pct(xs: List[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def rate(threads: int, per_thread: int, call: Callable[[], object]) -> float:
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            call()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in pool:
        t.join()
    return threads * per_thread / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (smoke test)")
    args = parser.parse_args()
    calls = 50 if args.quick else 2000
    per_thread = 10 if args.quick else 300

    with maas.Engine.memory(hosts_per_site=200, seed=3) as engine:
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        held = engine.submit("sim[000001-000100].dc1", "reboot", not_before=later).batch_id
        raw_request = json.dumps({"batch_id": held, "hostnames": []})
        session = engine._session

        # Alternate the three paths in rounds so drift hits them alike.
        api, raw, raw_json = [], [], []
        for _ in range(5):
            api += latencies(lambda: engine.batch(held), calls // 5)
            raw += latencies(lambda: session.call("GetBatch", raw_request), calls // 5)
            raw_json += latencies(lambda: json.loads(session.call("GetBatch", raw_request)), calls // 5)
        print(f"GetBatch of a 100-host batch, embedded in-memory engine, {calls} calls each")
        print("| path | p50 | p99 | vs raw (p50) |")
        print("|---|---|---|---|")
        base = statistics.median(raw)
        for name, xs in (
            ("typed API: engine.batch(id) -> Batch with 100 HostRuns", api),
            ("Rust half only: JSON text", raw),
            ("Rust half + json.loads", raw_json),
        ):
            print(f"| {name} | {statistics.median(xs) * 1e3:.3f} ms | {pct(xs, 0.99) * 1e3:.3f} ms | "
                  f"{statistics.median(xs) / base:.2f}x |")

        free = "sim[000101-000200].dc1"

        def dry() -> None:
            engine.dry_run(free, "power-cycle")

        one = rate(1, per_thread, dry)
        four = rate(4, per_thread, dry)
        one_again = rate(1, per_thread, dry)
        single = (one + one_again) / 2
        print()
        print(f"dry_run of 100 hosts, {per_thread} calls per thread")
        print("| threads | calls/s | vs 1 thread |")
        print("|---|---|---|")
        print(f"| 1 | {single:.0f} | 1.00x |")
        print(f"| 4 | {four:.0f} | {four / single:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
