"""Throughput beside ProcessPoolExecutor, loky, pebble and mpire, and how it grows with workers and store size.

Run with ``nox -s bench`` or ``python tests/benchmarks/bench_throughput.py [--quick]``.
Every pool uses fork and is timed on its submit-and-collect phase alone
(start-up and warm-up are not timed). Figures are medians over
repetitions with (min-max); a ratio divides by ProcessPoolExecutor's figure
in the same repetition. localabort stores every task's final state.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from localabort._schema import task_row
from localabort._states import new_id
from localabort._store import Store
from tests.benchmarks import charts, common
from tests.benchmarks.bench_tasks import LONG_AT, LONG_SECONDS, identity, sleep_1ms, sleep_1ms_or_long, sleep_1ms_timed

# Issue 33's targets.
SUBMIT_TARGET = 1.5  # x PPE, trivial tasks via submit(), 2 workers
PEER_TARGET = 1.0  # x the fastest peer, the same
ONE_WORKER_TARGET = 1.2  # x PPE, trivial tasks via submit(), 1 worker
MAP_TARGET = 1.5  # x PPE, map(chunksize=100), and ahead of every peer
SLEEP_TARGET = 0.97  # of the ideal, 1 ms tasks, 2 and 4 workers, and >= PPE
FIRST_TASK_TARGET = 5.0  # ms, a worker's wait for its first task
STORE_CPU_TARGET = 10.0  # us per trivial task, the parent's CPU for the store (``STORE_WORK``)
PARENT_CPU_TARGET = 40.0  # us per trivial task, the parent's threads together


CASES = ("identity, submit", "identity, map c=100", "sleep 1 ms, submit")


def cases(n):
    return list(zip(CASES, (identity, identity, sleep_1ms), (n, 5 * n, n // 10), ("submit", 100, "submit")))


def store_in(tmp):
    return os.path.join(tmp, f"{uuid.uuid4().hex}.sqlite")


def peers_table(tmp, n, reps):
    """Every pool at 2 workers, the three cases."""
    makers = {"ProcessPoolExecutor": common.ppe, "localabort": lambda w: common.localabort(w, store_in(tmp))}
    peers = common.installed_peers()
    makers.update(peers)
    missing = sorted(set(common.PEERS) - set(peers))
    rows, ideals, figures = [], [], {"peers": {}}
    for label, fn, count, mode in cases(n):
        rates = {name: [] for name in makers}
        for _ in range(reps):
            if fn is sleep_1ms:
                ideals.append(common.sleep_ideal())
            for name, make in makers.items():
                rates[name].append(common.throughput(make(2), fn, count, mode, identity))
        base = rates["ProcessPoolExecutor"]
        for name in makers:
            ratios = [r / b for r, b in zip(rates[name], base)]
            rows.append((label, name, common.spread(rates[name], "{:,.0f}"), common.spread(ratios, "{:.2f}")))
        figures[label] = (rates["localabort"], base)
        figures["peers"][label] = {name: rates[name] for name in peers}
    return rows, missing, ideals, figures


def callbacks_table(tmp, n, reps):
    """Trivial submit() with a done-callback on each future, 2 workers: the pools whose futures take one."""
    makers = {"ProcessPoolExecutor": common.ppe, "localabort": lambda w: common.localabort(w, store_in(tmp))}
    makers.update((name, make) for name, make in common.installed_peers().items() if name in ("loky", "pebble"))
    rates = {name: [] for name in makers}
    for _ in range(reps):
        for name, make in makers.items():
            rates[name].append(common.throughput(make(2), identity, n, "callback", identity))
    base = rates["ProcessPoolExecutor"]
    return [(name, common.spread(r, "{:,.0f}"), common.spread([a / b for a, b in zip(r, base)], "{:.2f}"))
            for name, r in rates.items()]  # fmt: skip


#: The worker counts of the growth table and chart (this machine has 2 cores).
WORKERS = (1, 2, 4, 8)
#: The finished tasks already in the store of the store-size table and chart.
STORE_SIZES = (1_000, 100_000, 1_000_000)


def workers_table(tmp, n, reps):
    """PPE and localabort at each of ``WORKERS``; also ``{(workers, case): (ours, PPE)}``."""
    rows, figures = [], {}
    for workers in WORKERS:
        for label, fn, count, mode in cases(n)[::2]:
            ours, base = [], []
            for _ in range(reps):
                base.append(common.throughput(common.ppe(workers), fn, count, mode, identity))
                ours.append(common.throughput(common.localabort(workers, store_in(tmp)), fn, count, mode, identity))
            ratios = [o / b for o, b in zip(ours, base)]
            rows.append((workers, label, common.spread(base, "{:,.0f}"), common.spread(ours, "{:,.0f}"),
                         common.spread(ratios, "{:.2f}")))  # fmt: skip
            figures[workers, label] = (ours, base)
    return rows, figures


#: Seconds of SQLite a row costs the writer here (measured alone: PENDING insert, claim and final upsert, 2026-11-28).
ROW_SECONDS = 40e-6


def store_share_table(tmp, n, reps):
    """Where the time goes: trivial submit() at 2 workers with the store's writes as they are, and without them.

    A diagnostic, not a mode of the library: ``Store.sync`` (the writer
    thread's one call per group commit) is replaced in this process, with
    a sleep as long as the rows' SQLite work (the writes off the parent's
    GIL and cores: what a writer process of its own could give at best),
    or with nothing at all (the pool alone, no store).
    """

    def asleep(self, executor_id, rows, aborts, *, claims, flushed_at=None):
        time.sleep(len(rows) * ROW_SECONDS)
        return [], {}

    def nothing(self, executor_id, rows, aborts, *, claims, flushed_at=None):
        return [], {}

    _, fn, count, mode = cases(n)[0]
    real = Store.sync
    variants = {"as shipped: every state written": real, "writes as a sleep, off the GIL": asleep,
                "no store writes (the pool alone)": nothing}  # fmt: skip
    rates = {name: [] for name in variants}
    base = []
    try:
        for _ in range(reps):
            base.append(common.throughput(common.ppe(2), fn, count, mode, identity))
            for name, sync in variants.items():
                Store.sync = sync
                rates[name].append(common.throughput(common.localabort(2, store_in(tmp)), fn, count, mode, identity))
    finally:
        Store.sync = real
    rows = [("ProcessPoolExecutor", common.spread(base, "{:,.0f}"), "1.00")]
    for name, got in rates.items():
        ratios = [r / b for r, b in zip(got, base)]
        rows.append((f"localabort, {name}", common.spread(got, "{:,.0f}"), common.spread(ratios, "{:.2f}")))
    return rows


def _cpu_seconds(stat_path):
    """User and system CPU seconds of the thread or process whose ``/proc`` stat file this is."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_now():
    """CPU seconds so far of each thread of this process (by name) and of each of its children (by pid)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    threads = {}
    for tid in os.listdir("/proc/self/task"):
        name = re.sub(r"\d+", "N", names.get(int(tid), "a thread not Python's"))  # Thread-3 in one pool, -5 in the next
        threads[name] = threads.get(name, 0.0) + _cpu_seconds(f"/proc/self/task/{tid}/stat")
    children = {(c.pid, c.name): _cpu_seconds(f"/proc/{c.pid}/stat") for c in multiprocessing.active_children()}
    for pid in _recorders():
        children[pid, "localabort-recorder"] = _cpu_seconds(f"/proc/{pid}/stat")
    return threads, children


def _recorders():
    """The pids of this process's recorders: ``subprocess`` starts them, so ``multiprocessing`` does not list them."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            if parent == os.getpid():
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"localabort._recorder" in f.read():
                        found.append(int(entry))
        except (OSError, ValueError, IndexError):  # not a process, or gone meanwhile
            continue
    return found


#: The parent's functions that do the store's work, whose CPU (in whatever thread) is the parent's for the store.
STORE_WORK = (
    ("localabort._scheduler", "Scheduler", "take_rows"),  # the rows of a write
    ("localabort._recorder", "Recorder", "hand"),  # handed to the recorder
    ("localabort._recorder", "Recorder", "take"),  # its answer
    ("localabort._store", "Store", "aborts_requested"),  # the abort poll
    ("localabort._store", "Store", "write"),  # a user thread's write (an abort, a cancel)
)


@contextlib.contextmanager
def _store_work(into):
    """Count the thread CPU the parent spends in ``STORE_WORK``, into ``into["store"]`` (seconds)."""
    import importlib

    into["store"] = 0.0
    saved = []
    for module, cls, name in STORE_WORK:
        owner = getattr(importlib.import_module(module), cls, None)
        real = getattr(owner, name, None)
        if real is None:
            continue

        def timed(*args, _real=real, **kwargs):
            start = time.thread_time()
            try:
                return _real(*args, **kwargs)
            finally:
                into["store"] += time.thread_time() - start

        saved.append((owner, name, real))
        setattr(owner, name, timed)
    try:
        yield
    finally:
        for owner, name, real in saved:
            setattr(owner, name, real)


@contextlib.contextmanager
def _cpu_spent(into):
    """Around a timed phase: the CPU seconds each thread of this process, each worker and the recorder spent in it."""
    threads, children = _cpu_now()
    yield
    after, after_children = _cpu_now()
    into["threads"] = {name: seconds - threads.get(name, 0.0) for name, seconds in after.items()}
    spent = {key: seconds - children.get(key, 0.0) for key, seconds in after_children.items()}
    into["workers"] = [seconds for (_, name), seconds in spent.items() if name != "localabort-recorder"]
    into["recorder"] = sum(seconds for (_, name), seconds in spent.items() if name == "localabort-recorder")


#: Rows of the CPU table that are not threads of the parent.
OWN_PROCESS = "the recorder (a process of its own)"
STORE_SHARE = "of which the store's work, in any thread"
NOT_THREADS = ("each worker (mean)", OWN_PROCESS, STORE_SHARE)


def cpu_table(n, reps):
    """The profile behind the throughput targets: CPU per task, by thread of the parent and per worker, beside PPE.

    Trivial submit() at 2 workers, as the first table. The parent's threads
    share one GIL: their CPU per task bounds the rate however fast the
    workers are. Read from ``/proc`` before and after the timed phase.
    """
    rows, figures = [], {}
    for name, make in (("ProcessPoolExecutor", common.ppe), ("localabort", None)):
        spent = collections.defaultdict(list)
        rates = []
        for _ in range(reps):
            seen = {}
            with tempfile.TemporaryDirectory() as tmp, _store_work(seen) if make is None else contextlib.nullcontext():
                pool = make(2) if make else common.localabort(2, store_in(tmp))
                around = functools.partial(_cpu_spent, seen)
                rates.append(common.throughput(pool, identity, n, "submit", identity, around=around))
            for thread, seconds in seen["threads"].items():
                spent[thread].append(seconds / n * 1e6)
            spent["each worker (mean)"].append(statistics.mean(seen["workers"]) / n * 1e6)
            if make is None:
                spent[OWN_PROCESS].append(seen["recorder"] / n * 1e6)
                spent[STORE_SHARE].append(seen["store"] / n * 1e6)
        parent = [sum(v[i] for k, v in spent.items() if k not in NOT_THREADS) for i in range(reps)]
        figures[name] = {"parent": statistics.median(parent), **{k: statistics.median(v) for k, v in spent.items()}}
        rows.append((name, "parent, all threads", common.spread(parent, "{:.0f}"), common.spread(rates, "{:,.0f}")))
        for thread, us in sorted(spent.items(), key=lambda kv: -statistics.median(kv[1])):
            if statistics.median(us) >= 1:
                rows.append((name, thread, common.spread(us, "{:.0f}"), ""))
    return rows, figures


def gaps_table(reps, count=2000):
    """Why 1 ms tasks miss the ideal: how long a worker waits between two tasks, and before its first one."""
    rows, firsts = [], {}
    for workers in (2, 4):
        for name, make in (("ProcessPoolExecutor", common.ppe), ("localabort", None)):
            gaps, heads = [], []
            for _ in range(reps):
                with tempfile.TemporaryDirectory() as tmp:
                    pool = make(workers) if make else common.localabort(workers, store_in(tmp))
                    try:
                        for _ in pool.map(sleep_1ms, range(4 * workers), 1):
                            pass
                        start = time.perf_counter()
                        futures = [pool.submit(sleep_1ms_timed, i) for i in range(count)]
                        runs = [f.result() for f in futures]
                    finally:
                        pool.close()
                by_worker = collections.defaultdict(list)
                for pid, began, ended in runs:
                    by_worker[pid].append((began, ended))
                waits = []
                for spans in by_worker.values():
                    spans.sort()
                    heads.append((spans[0][0] - start) * 1e3)
                    waits += [(b[0] - a[1]) * 1e6 for a, b in zip(spans, spans[1:])]
                gaps.append(waits)
            every = sorted(itertools.chain(*gaps))
            firsts[workers, name] = statistics.median(heads)
            rows.append((workers, name, f"{statistics.mean(every):.0f}", f"{statistics.median(every):.0f}",
                         f"{common.pct(every, 99):.0f}", common.spread(heads, "{:.0f}")))  # fmt: skip
    return rows, firsts


def prefill(path, count):
    """A store already holding ``count`` finished tasks."""
    store = Store.open(path, create=True)
    now = time.time()
    for start in range(0, count, 10_000):
        store.write([
            task_row(new_id(), executor_id="old", name="tests.benchmarks.bench_tasks.identity", state="SUCCESS",
                     submitted_at=now, started_at=now, finished_at=now, result=b"\x80\x05K\x01.")
            for _ in range(min(10_000, count - start))
        ])  # fmt: skip
    store.dispose()


def store_size_table(tmp, n, reps):
    """localabort at 2 workers on a store that already holds each of ``STORE_SIZES``; also ``{(size, case): ...}``."""
    rows, figures = [], {}
    for size in STORE_SIZES:
        path = store_in(tmp)
        prefill(path, size)
        for label, fn, count, mode in cases(n)[::2]:
            ours, base = [], []
            for _ in range(reps):
                base.append(common.throughput(common.ppe(2), fn, count, mode, identity))
                ours.append(common.throughput(common.localabort(2, path), fn, count, mode, identity))
            ratios = [o / b for o, b in zip(ours, base)]
            rows.append((f"{size:,}", label, common.spread(ours, "{:,.0f}"), common.spread(ratios, "{:.2f}")))
            figures[size, label] = (ours, base)
    return rows, figures


def long_among_short_table(tmp, reps, short=350):
    """Head-of-line blocking: 1 ms tasks with one long task among them, 2 workers; how soon the short ones end.

    Ideal: the other worker runs every short task while one runs the long
    one; a pool that holds short tasks ahead of the long one on its worker
    makes them wait for its end.
    """
    makers = {"ProcessPoolExecutor": common.ppe, "localabort": lambda w: common.localabort(w, store_in(tmp))}
    makers.update(common.installed_peers())
    times = {name: [] for name in makers}
    for _ in range(reps):
        for name, make in makers.items():
            pool = make(2)
            try:
                for _ in pool.map(identity, range(20), 1):
                    pass
                start = time.perf_counter()
                futures = [pool.submit(sleep_1ms_or_long, i) for i in range(short + 1)]
                for i, future in enumerate(futures):
                    if i != LONG_AT:
                        future.result()
                times[name].append(time.perf_counter() - start)
                futures[LONG_AT].result()
            finally:
                pool.close()
    ideal = (LONG_AT / 2 + short - LONG_AT) * 0.001  # both share the first ones; then one runs the long one alone
    rows = [(name, common.spread([t * 1000 for t in got], "{:,.0f}"), f"{statistics.median(got) / ideal:.2f}")
            for name, got in times.items()]  # fmt: skip
    return rows, ideal


def main() -> None:
    short = common.quick(__doc__, "fewer tasks and repetitions")
    n, reps = (4000, 2) if short else (20000, 5)
    with tempfile.TemporaryDirectory() as tmp:
        peer_rows, missing, ideals, figures = peers_table(tmp, n, reps)
        worker_rows, by_workers = workers_table(tmp, n, max(2, reps - 2))
        size_rows, by_size = store_size_table(tmp, n, max(2, reps - 2))
        share_rows = store_share_table(tmp, n, max(2, reps - 2))
        callback_rows = callbacks_table(tmp, n, max(2, reps - 2))
    cpu_rows, cpu = cpu_table(n, max(2, reps - 2))
    gap_rows, firsts = gaps_table(max(2, reps - 2))
    with tempfile.TemporaryDirectory() as tmp:
        hol_rows, hol_ideal = long_among_short_table(tmp, max(2, reps - 2))

    print(f"localabort throughput, Python {sys.version.split()[0]}, {os.cpu_count()} cores; tasks/s")
    print()
    print(f"Beside the peers, 2 workers, {reps} repetitions (ratio: / ProcessPoolExecutor, same repetition)")
    if missing:
        print(f"(not installed, so not measured: {', '.join(missing)})")
    print()
    common.table(("case", "pool", "tasks/s", "ratio"), peer_rows)
    print()
    median = statistics.median
    submit, mapped = (median(o / b for o, b in zip(*figures[case])) for case in CASES[:2])
    ours = median(figures[CASES[0]][0])
    fastest, fastest_rate = max(((name, median(r)) for name, r in figures["peers"][CASES[0]].items()),
                                key=lambda peer: peer[1], default=("no peer", 0.0))  # fmt: skip
    one = median(o / b for o, b in zip(*by_workers[1, CASES[0]]))
    ideal = median(ideals)  # for 2 workers; n workers sleep n times as much
    of_ideal = {w: median(by_workers[w, CASES[2]][0]) / (ideal * w / 2) for w in (2, 4)}
    over_ppe = {w: median(o / b for o, b in zip(*by_workers[w, CASES[2]])) for w in (2, 4)}
    mapped_peers = {name: median(r) for name, r in figures["peers"][CASES[1]].items()}
    mapped_ours = median(figures[CASES[1]][0])
    verdict = common.verdict
    peer = f"{ours / fastest_rate:.2f}x" if fastest_rate else "-"
    ahead = all(mapped_ours > rate for rate in mapped_peers.values())
    first = max(firsts[w, "localabort"] for w in (2, 4))
    store_cpu, parent_cpu = cpu["localabort"][STORE_SHARE], cpu["localabort"]["parent"]
    targets = [
        (f"trivial submit(), 2 workers >= {SUBMIT_TARGET}x PPE", f"{submit:.2f}x", verdict(submit >= SUBMIT_TARGET)),
        (f"the same >= {PEER_TARGET}x the fastest peer ({fastest})", peer, verdict(ours >= PEER_TARGET * fastest_rate)),
        (f"trivial submit(), 1 worker >= {ONE_WORKER_TARGET}x PPE", f"{one:.2f}x", verdict(one >= ONE_WORKER_TARGET)),
        (f"map(chunksize=100) >= {MAP_TARGET}x PPE, ahead of every peer", f"{mapped:.2f}x",
         verdict(mapped >= MAP_TARGET and ahead)),
    ]  # fmt: skip
    for w in (2, 4):
        what = (
            f"1 ms tasks, {w} workers >= {SLEEP_TARGET} of the ideal ({ideal * w / 2:,.0f}/s: {w} / time.sleep(0.001)),"
            " and >= PPE"
        )
        got = f"{of_ideal[w]:.2f}, {over_ppe[w]:.2f}x PPE"
        targets.append((what, got, verdict(of_ideal[w] >= SLEEP_TARGET and over_ppe[w] >= 1.0)))
    targets += [
        (f"a worker's wait for its first task <= {FIRST_TASK_TARGET:.0f} ms (1 ms tasks, 2 and 4 workers)",
         f"{first:.0f} ms", verdict(first <= FIRST_TASK_TARGET)),
        (f"the parent's CPU for the store (rows, hand-over, answers, polls) <= {STORE_CPU_TARGET:.0f} us a task",
         f"{store_cpu:.0f} us", verdict(store_cpu <= STORE_CPU_TARGET)),
        (f"the parent's CPU, all threads, <= {PARENT_CPU_TARGET:.0f} us per trivial task",
         f"{parent_cpu:.0f} us", verdict(parent_cpu <= PARENT_CPU_TARGET)),
    ]  # fmt: skip
    common.table(("target (issue 33)", "measured", ""), targets)
    print()
    print("By workers (2 cores here)")
    print()
    common.table(("workers", "case", "ProcessPoolExecutor", "localabort", "ratio"), worker_rows)
    print()
    print("By store size: localabort, 2 workers, on a store already holding that many finished tasks")
    print()
    common.table(("tasks in store", "case", "localabort", "ratio to PPE"), size_rows)
    print()
    print("A done-callback on every future: trivial submit(), 2 workers (ratio: / ProcessPoolExecutor)")
    print()
    common.table(("pool", "tasks/s", "ratio"), callback_rows)
    print()
    print("Where the time goes: trivial submit(), 2 workers, the store's writes replaced in this process (diagnostic)")
    print()
    common.table(("pool", "tasks/s", "ratio to PPE"), share_rows)
    print()
    print("Where the time goes: CPU per task (us), trivial submit(), 2 workers; the parent's threads share one GIL")
    print()
    common.table(("pool", "thread", "CPU us per task", "tasks/s"), cpu_rows)
    print()
    print("Where the time goes: 1 ms tasks, a worker's wait between two tasks (us), and before its first (ms)")
    print()
    common.table(("workers", "pool", "mean wait", "median", "p99", "first task after, ms"), gap_rows)
    print()
    print(
        f"Head-of-line blocking: 350 tasks of 1 ms with one of {LONG_SECONDS} s among them (the {LONG_AT + 1}st), "
        f"2 workers; ms until every short one ended (ideal {hol_ideal * 1000:.0f}: the other worker runs them)"
    )
    print()
    common.table(("pool", "ms", "x ideal"), hol_rows)
    print()
    for path in draw(figures, by_workers, by_size):
        print(f"chart: {os.path.relpath(path, common.ROOT)}")


#: Where the charts go: the docs show them above the tables.
CHARTS = os.path.join(common.ROOT, "docs", "img")


def draw(figures, by_workers, by_size):
    """The charts of this run, as SVG files in ``CHARTS``: pools side by side, and growth with workers and store."""
    median = statistics.median
    groups = {}
    for case in CASES:
        ours, base = figures[case]
        row = {"localabort": median(o / b for o, b in zip(ours, base))}
        row.update((name, median(r / b for r, b in zip(rates, base))) for name, rates in figures["peers"][case].items())
        row["ProcessPoolExecutor"] = 1.0
        groups[case] = row
    note = f"2 workers, {os.cpu_count()} cores; tasks/s over ProcessPoolExecutor's in the same repetition"
    peers = charts.bars(os.path.join(CHARTS, "bench-peers.svg"), "Throughput beside the peers", groups, note, 1.5)
    series = {}
    for case in (CASES[0], CASES[2]):
        series[f"localabort, {case}"] = [median(by_workers[w, case][0]) for w in WORKERS]
        series[f"PPE, {case}"] = [median(by_workers[w, case][1]) for w in WORKERS]
    grow = charts.lines(os.path.join(CHARTS, "bench-workers.svg"), "Tasks/s by workers", [str(w) for w in WORKERS],
                        series, "workers", "tasks/s", f"{os.cpu_count()} cores")  # fmt: skip
    series = {}
    for case in (CASES[0], CASES[2]):
        series[f"localabort, {case}"] = [median(by_size[s, case][0]) for s in STORE_SIZES]
        series[f"PPE, {case}"] = [median(by_size[s, case][1]) for s in STORE_SIZES]
    size = charts.lines(os.path.join(CHARTS, "bench-store-size.svg"), "Tasks/s by finished tasks in the store",
                        [f"{s:,}" for s in STORE_SIZES], series, "finished tasks already in the store", "tasks/s",
                        "2 workers; PPE keeps no store")  # fmt: skip
    return peers, grow, size


if __name__ == "__main__":
    main()
