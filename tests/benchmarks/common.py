"""What the benchmark scripts share: summaries, and one interface over every pool they compare."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import statistics
import time

#: The project's root: benchmarks run from anywhere, and their child interpreters import ``tests`` from here.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def quick(doc, what):
    """Parse a benchmark's command line: ``--quick`` (``what`` says what it cuts); return whether given."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=what)
    return parser.parse_args().quick


def spread(values, fmt="{:.3g}"):
    """The median, then (min-max)."""
    values = sorted(values)
    return f"{fmt.format(statistics.median(values))} ({fmt.format(values[0])}-{fmt.format(values[-1])})"


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def verdict(ok):
    return "meets target" if ok else "MISSES target"


def table(header, rows):
    """A markdown table, printed."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def sleep_ideal(workers=2, calls=500):
    """Tasks/s of ``workers`` processes doing nothing but ``time.sleep(0.001)``, as this machine sleeps now."""
    start = time.perf_counter()
    for _ in range(calls):
        time.sleep(0.001)
    return workers / ((time.perf_counter() - start) / calls)


class Pool:
    """One pool under test: ``submit(fn, x)`` gives an object with ``result()``; ``map`` yields results."""

    def __init__(self, name, pool, submit, map_, close):
        self.name, self.pool = name, pool
        self._submit, self._map, self._close = submit, map_, close

    def submit(self, fn, x):
        return self._submit(self.pool, fn, x)

    def map(self, fn, items, chunksize):
        return self._map(self.pool, fn, items, chunksize)

    def close(self):
        self._close(self.pool)


def ppe(workers):
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return Pool(
        "ProcessPoolExecutor", pool, lambda p, fn, x: p.submit(fn, x),
        lambda p, fn, items, c: p.map(fn, items, chunksize=c), lambda p: p.shutdown(),
    )  # fmt: skip


def localabort(workers, store):
    from localabort import Executor

    pool = Executor(max_workers=workers, store=store, mp_context="fork")
    return Pool(
        "localabort", pool, lambda p, fn, x: p.submit(fn, x),
        lambda p, fn, items, c: p.map(fn, items, chunksize=c), lambda p: p.shutdown(),
    )  # fmt: skip


def loky(workers):
    import loky as _loky

    pool = _loky.ProcessPoolExecutor(workers)
    return Pool(
        "loky", pool, lambda p, fn, x: p.submit(fn, x),
        lambda p, fn, items, c: p.map(fn, items, chunksize=c), lambda p: p.shutdown(),
    )  # fmt: skip


def pebble(workers):
    import pebble as _pebble

    def close(p):
        p.close()
        p.join()

    pool = _pebble.ProcessPool(max_workers=workers, context=multiprocessing.get_context("fork"))
    return Pool(
        "pebble", pool, lambda p, fn, x: p.schedule(fn, args=(x,)),
        lambda p, fn, items, c: p.map(fn, items, chunksize=c).result(), close,
    )  # fmt: skip


class _MpireResult:
    def __init__(self, async_result):
        self.async_result = async_result

    def result(self):
        return self.async_result.get()


def mpire(workers):
    import mpire as _mpire

    pool = _mpire.WorkerPool(n_jobs=workers, start_method="fork", keep_alive=True)
    return Pool(
        "mpire", pool, lambda p, fn, x: _MpireResult(p.apply_async(fn, (x,))),
        lambda p, fn, items, c: p.imap(fn, items, chunk_size=c), lambda p: p.stop_and_join(),
    )  # fmt: skip


PEERS = {"loky": loky, "pebble": pebble, "mpire": mpire}


def installed_peers():
    """The peers importable here, by name; the others are reported as not installed."""
    found = {}
    for name, make in PEERS.items():
        try:
            __import__(name)
        except ImportError:
            continue
        found[name] = make
    return found


def _ignore(future):
    pass


def throughput(pool, fn, n, mode, warm, around=contextlib.nullcontext):
    """Tasks/s of the submit-and-collect phase alone (``mode``: "submit", "callback", or a map chunksize).

    ``around()`` is entered just before that phase and left just after it,
    with the pool still open (to read what its processes spent).
    """
    try:
        for _ in pool.map(warm, range(20), 1):  # every worker started and warm
            pass
        with around():
            start = time.perf_counter()
            if mode in ("submit", "callback"):
                futures = [pool.submit(fn, i) for i in range(n)]
                if mode == "callback":  # a done-callback each, added as a caller adds it: after submit()
                    for f in futures:
                        f.add_done_callback(_ignore)
                for f in futures:
                    f.result()
            else:
                for _ in pool.map(fn, range(n), mode):
                    pass
            return n / (time.perf_counter() - start)
    finally:
        pool.close()
