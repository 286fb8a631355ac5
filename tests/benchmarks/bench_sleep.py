"""1 ms tasks beside their floor: what the leanest pool Python can be reaches, and what a worker's own steps cost.

Run with ``nox -s bench -- sleep`` or ``python tests/benchmarks/bench_sleep.py [--quick]``.

Issue 33 asks for 0.97 of the ideal rate on 1 ms tasks (``workers /
time.sleep(0.001)``, as this machine sleeps now), which leaves about 34 µs
a task for everything but the sleep. Three figures say where that goes:

- the steps of a worker's path between two tasks that are our Python (not
  the pipe's read and write, the log capture or the lock of a call sent
  ahead), timed in one process with nothing else running, hot (back to
  back) and right after a 1 ms sleep;
- the floor: a pool of forked processes, each handed all its calls at once,
  that unpickles a call, runs it, pickles the result and writes it (one
  write a task), under a parent that only reads;
- localabort's own worker (``worker_main``) under that same parent, and
  the whole executor beside ``ProcessPoolExecutor``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import select
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from localabort._capture import Usage
from localabort._messages import _KINDS, Call, Calls, Reply, decode, encode
from localabort._slot import split_messages
from localabort._task import Binding, run
from localabort._words import AbortWords, allocate
from localabort._worker import WorkerSetup, _reply, worker_main
from tests.benchmarks import common
from tests.benchmarks.bench_tasks import identity, sleep_1ms
from tests.benchmarks.bench_throughput import SLEEP_TARGET

REPLY = _KINDS.index(Reply)  # the number a reply's message leads with (``_messages.encode``)
#: Seconds without a reply after which a run is given up: a worker died.
STALL = 10.0


def steps_after_sleep(rounds):
    """Median µs of each step of a worker's path, hot and right after ``time.sleep(0.001)``, in this process."""
    usage, clock = Usage(), time.perf_counter
    blob = pickle.dumps((identity, (1,), {}))
    steps = ("unpickle the call", "bind the task", "run it", "its CPU and memory", "reply, pickled (not sent)")
    times = {}
    for asleep in (False, True):
        spent = {name: [] for name in steps}
        for _ in range(rounds):
            if asleep:
                time.sleep(0.001)
            t0 = clock()
            target, args, kwargs = pickle.loads(blob)
            t1 = clock()
            binding = Binding("t", lambda: False)
            t2 = clock()
            usage.begin()
            outcome, progress = run(target, args, kwargs, binding)
            t3 = clock()
            used = usage.end()
            t4 = clock()
            _reply(1, outcome, progress, "identity", t3 - t2, used)
            t5 = clock()
            for name, took in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                spent[name].append(took * 1e6)
        times[asleep] = {name: statistics.median(got) for name, got in spent.items()}
    usage.close()
    rows = []
    for name in steps:
        hot, cold = times[False][name], times[True][name]
        rows.append((name, f"{hot:.1f}", f"{cold:.1f}", f"{cold / hot:.1f}x"))
    hot, cold = sum(times[False].values()), sum(times[True].values())
    rows.append(("all of them (a sum of medians)", f"{hot:.1f}", f"{cold:.1f}", f"{cold / hot:.1f}x"))
    return rows


def _lean_worker(conn, words, setup):
    """The floor's worker: all its calls in one message; per call one unpickle, the call, one pickle, one write."""
    calls = decode(conn.recv_bytes()).unpack()
    fd = conn.fileno()
    for call in calls:
        target, args, kwargs = pickle.loads(call.blob)
        data = pickle.dumps((REPLY, call.seq, target(*args, **kwargs)))
        os.write(fd, len(data).to_bytes(4, "big") + data)
    conn.recv_bytes()  # the parent's goodbye


def fed_at_once(workers, target, count):
    """Tasks/s of ``workers`` processes running ``target``, each handed all its calls at once (the first to
    run now, the rest sent ahead, as the executor sends them), under a parent that only reads their replies;
    timed from the first reply to the last."""
    ctx = multiprocessing.get_context("fork")
    words_array = allocate(ctx, workers)
    blob = pickle.dumps((sleep_1ms, (1,), {}))
    per = count // workers
    pipes, procs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        setup = WorkerSetup("sqlite:///" + os.path.join(tmp, "unused.sqlite"))
        try:
            for slot in range(workers):
                words = AbortWords(words_array, slot, ctx.Lock())
                ours, theirs = ctx.Pipe()
                proc = ctx.Process(target=target, args=(theirs, words, setup), daemon=True)
                proc.start()
                theirs.close()
                pipes.append((ours, words))
                procs.append(proc)
            if target is worker_main:
                for ours, _ in pipes:
                    ours.recv_bytes()  # Ready
            for slot, (ours, words) in enumerate(pipes):
                first_seq = slot * per + 1
                calls = [Call(seq, words.take(), seq != first_seq, f"t{seq}", "sleep_1ms", blob, False)
                         for seq in range(first_seq, first_seq + per)]  # fmt: skip
                ours.send_bytes(encode(Calls.batch(calls)))
            return _replies_per_second(pipes, per * workers)
        finally:
            for ours, _ in pipes:
                with contextlib.suppress(OSError):
                    ours.send_bytes(b"")  # the empty message: stop
            for proc in procs:
                proc.join(STALL)
                if proc.is_alive():
                    proc.kill()
                    proc.join()


def _replies_per_second(pipes, expected):
    """Read the workers' messages until ``expected`` replies came; replies/s from the first to the last."""
    poller = select.poll()
    unread = {}
    for ours, _ in pipes:
        poller.register(ours.fileno(), select.POLLIN)
        unread[ours.fileno()] = bytearray()
    got, first, before = 0, None, 0
    while got < expected:
        ready = poller.poll(STALL * 1000)
        if not ready:
            raise RuntimeError(f"no reply for {STALL:.0f} s: a worker is stuck")
        for fd, _ in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("a worker died")
            unread[fd] += chunk
            got += sum(1 for message in split_messages(unread[fd]) if pickle.loads(message)[0] == REPLY)
            if first is None:
                first, before = time.perf_counter(), got
    return (got - before) / (time.perf_counter() - first)


def pools_table(reps, count):
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (2, 4):
            got = {"the floor": [], "localabort's worker, the same parent": [], "localabort": [], "PPE": []}
            for _ in range(reps):
                ideal = common.sleep_ideal(workers, 300)
                got["the floor"].append(fed_at_once(workers, _lean_worker, count) / ideal)
                got["localabort's worker, the same parent"].append(fed_at_once(workers, worker_main, count) / ideal)
                store = os.path.join(tmp, f"s{workers}-{len(got['PPE'])}.sqlite")
                pool = common.localabort(workers, store)
                got["localabort"].append(common.throughput(pool, sleep_1ms, count, "submit", identity) / ideal)
                got["PPE"].append(common.throughput(common.ppe(workers), sleep_1ms, count, "submit", identity) / ideal)
            for name, figures in got.items():
                rows.append((workers, name, common.spread(figures, "{:.3f}")))
                ratios[workers, name] = statistics.median(figures)
    return rows, ratios


def main() -> None:
    short = common.quick(__doc__, "fewer tasks and repetitions")
    reps, count, rounds = (2, 1000, 500) if short else (5, 2000, 2000)
    steps = steps_after_sleep(rounds)
    rows, ratios = pools_table(reps, count)
    print(f"1 ms tasks beside their floor, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print()
    print("A worker's steps between two tasks, one process alone: median µs, hot and right after a 1 ms sleep")
    print()
    common.table(("step", "hot", "after a 1 ms sleep", ""), steps)
    print()
    print(
        f"1 ms tasks, of the ideal ({reps} repetitions): the floor (every call handed over at once; one unpickle, "
        "the call, one pickle, one write a task; a parent that only reads), localabort's worker under that "
        "parent, and the pools"
    )
    print()
    common.table(("workers", "pool", "of the ideal"), rows)
    print()
    targets = [
        (f"1 ms tasks, {w} workers >= {SLEEP_TARGET} of the ideal, and >= PPE", f"{ratios[w, 'localabort']:.3f}, "
         f"PPE {ratios[w, 'PPE']:.3f} (floor {ratios[w, 'the floor']:.3f})",
         common.verdict(ratios[w, "localabort"] >= SLEEP_TARGET and ratios[w, "localabort"] >= ratios[w, "PPE"]))
        for w in (2, 4)
    ]  # fmt: skip
    common.table(("target (issue 33)", "measured", ""), targets)


if __name__ == "__main__":
    main()
