"""The pytest plugin: a real ``Executor`` per test. The one module that imports pytest.

It is registered through the ``pytest11`` entry point, so installing
localabort is enough::

    def test_crunch_stops(localabort_executor):
        fut = localabort_executor.submit(Crunch, 10**9)
        fut.abort()
        with pytest.raises(TaskAborted):
            fut.result(timeout=10)

Choose the start method for a run with ``--localabort-start-method=spawn``,
or for one test with ``@pytest.mark.localabort(start_method="spawn",
max_workers=1)``. ``async def`` tests (pytest-asyncio, anyio) take
``localabort_async_executor``, the same executor set up and torn down on
their event loop::

    @pytest.mark.asyncio
    async def test_crunch_returns(localabort_async_executor):
        assert await localabort_async_executor.submit(Crunch, 3) == [0, 1, 4]

A test that ends with a task unfinished fails: the
plugin aborts the leftovers (terminating them after a grace period) and
names them.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Any, AsyncIterator, Dict, Iterator, Optional

import pytest

from ._executor import Executor

__all__ = ["localabort_async_executor", "localabort_executor"]

#: Seconds leftover tasks get to honour an abort before their workers are terminated.
GRACE = 5.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("localabort")
    group.addoption(
        "--localabort-start-method",
        choices=multiprocessing.get_all_start_methods(),
        default=None,
        help="start method of the localabort_executor fixture's workers (default: the platform's)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "localabort(start_method=None, max_workers=2): options of the localabort_executor fixture"
    )


def _options(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """The fixture's ``Executor`` options: the marker's, the command line's start method, a fresh store."""
    marker = request.node.get_closest_marker("localabort")
    options = dict(marker.kwargs) if marker is not None else {}
    start_method = options.pop("start_method", None) or request.config.getoption("localabort_start_method")
    max_workers = options.pop("max_workers", 2)
    if options:
        raise pytest.UsageError(f"@pytest.mark.localabort got unknown options {sorted(options)}")
    store = tmp_path_factory.mktemp("localabort") / "store.sqlite"
    return {"max_workers": max_workers, "store": str(store), "mp_context": start_method}


def _end_leftovers(executor: Executor) -> Optional[str]:
    """Abort the tasks a test left unfinished (terminating them after ``GRACE``); name them, if any."""
    leftovers = [job.future for job in list(executor._scheduler.jobs.values())]
    if not leftovers:
        return None
    names = ", ".join(f"{f.id} ({f.state})" for f in leftovers[:5]) + (" ..." if len(leftovers) > 5 else "")
    executor.abort_all()
    _, stuck = concurrent.futures.wait(leftovers, timeout=GRACE)
    if stuck:
        executor._manager.terminate()
    return (
        f"{len(leftovers)} localabort task(s) unfinished when the test ended: {names}; "
        "wait for each future (future.result() or await future) before the test returns"
    )


@pytest.fixture
def localabort_executor(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    """A real ``Executor`` on a store under a temporary folder, shut down after the test.

    ``Task.delay()`` submits to it. The test fails if it leaves a task unfinished.
    """
    with Executor(**_options(request, tmp_path_factory)) as executor:
        yield executor
        leftovers = _end_leftovers(executor)
    if leftovers:
        pytest.fail(leftovers, pytrace=False)


def _async_fixture(function: Any) -> Any:
    """pytest-asyncio's fixture decorator if it is installed (its strict mode needs it), else pytest's.

    anyio's plugin runs an ``async def`` fixture for the tests that use it either way.
    """
    try:
        import pytest_asyncio
    except ImportError:
        return pytest.fixture(function)
    return pytest_asyncio.fixture(function)


@_async_fixture
async def localabort_async_executor(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Executor]:
    """``localabort_executor`` for ``async def`` tests (pytest-asyncio or anyio): set up and torn down on the loop.

    Its end waits for the workers without blocking the event loop (``async
    with Executor(...)``); the same options, markers and leftover check.
    """
    import asyncio

    async with Executor(**_options(request, tmp_path_factory)) as executor:
        yield executor
        leftovers = await asyncio.get_running_loop().run_in_executor(None, _end_leftovers, executor)
    if leftovers:
        pytest.fail(leftovers, pytrace=False)
