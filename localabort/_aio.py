"""asyncio: awaiting a task without blocking the event loop, and a cancelled await that aborts it.

``await future`` (an ``AbortableFuture``) and ``await
AbortableAsyncResult(...)`` return the value or raise as ``result()`` and
``get()`` do. The loop never blocks: a future's completion reaches the
loop through ``call_soon_threadsafe`` from the executor's thread, and a
store is read on the loop's default executor (a thread) between
``asyncio.sleep`` pauses. When the awaiting asyncio task is cancelled
while the localabort task is unfinished, the task is aborted (as
``abort()``: it stops at its next ``is_aborted()``, or never starts), and
the cancellation goes on to the awaiter as usual: nothing waits for the
abort to land.

An ``AbortableTask`` whose ``run`` is ``async def`` runs in an event loop
of its own (``run_task_coroutine``, in whichever process runs the task:
a worker, a Celery worker, ``run_inline``). Beside it, a watcher reads the
task's abort word every ``WATCH_INTERVAL`` s (a memory read in a worker)
and, once set, cancels the coroutine at its next ``await``: a task that
lets the ``CancelledError`` go ends ABORTED; one that catches it and
returns a value ends ABORTED with that value as its partial result, as a
task that checks ``is_aborted()`` does. Soft time limits ask the same way.
A coroutine that never awaits never sees the cancellation: ``time_limit``
and ``terminate_after`` still stop it.

``async with Executor(...)`` waits for the batch on its exit in a thread;
a cancellation there, or an exit by cancellation, aborts every unfinished
task (as Ctrl-C does in a ``with`` block) and waits for them to end.

What CPython does not let a library hook: ``asyncio.wrap_future(future)``
and ``loop.run_in_executor(executor, fn)`` chain an asyncio future to the
executor's, and when that one is cancelled they call the executor's
future's ``cancel()``, whose meaning ``concurrent.futures`` fixes: it
withdraws a task that has not started (here: it ends ABORTED, unrun) and
leaves a running one alone. Only ``await future`` aborts a running task.

asyncio is imported on the first await, not with the package.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ._errors import TaskAborted

if TYPE_CHECKING:  # the handles and the task come in as arguments: this module imports neither's
    import asyncio
    from collections.abc import Coroutine

__all__ = ["executor_exit", "run_task_coroutine", "wait_future", "wait_result"]

T = TypeVar("T")

#: Seconds between two reads of the store while awaiting an ``AbortableAsyncResult`` (it starts faster).
POLL_INTERVAL = 0.05
#: Seconds between two looks at an async task's abort word, in its event loop.
WATCH_INTERVAL = 0.002


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def wait_future(future: Any) -> Any:
    """``await future`` (an ``AbortableFuture``): its value, or its exception raised.

    A cancellation aborts the task first, then goes on.
    """
    import asyncio

    if not future.done():
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()

        def done(_: Any) -> None:  # on the thread that completed the future
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile: no one waits any more
                loop.call_soon_threadsafe(_wake, waiter)

        future.add_done_callback(done)
        try:
            await waiter
        except asyncio.CancelledError:
            future.abort()
            raise
    return future.result()


async def wait_result(result: Any, watch: Any) -> Any:
    """``await AbortableAsyncResult(...)``: as ``get()``, its looks (``watch``) off the loop; a cancellation aborts."""
    import asyncio

    await _off_loop(result.store.lookup, result.id)  # an unknown id raises, instead of waiting for ever
    try:
        record = await _off_loop(watch.look)
        while record is None:
            await asyncio.sleep(watch.pause())
            record = await _off_loop(watch.look)
    except asyncio.CancelledError:
        result.abort()
        raise
    return watch.settled(record)


async def executor_exit(shutdown: Callable[[], None], abort_all: Callable[[], Any], cancelled: bool) -> None:
    """An ``async with`` block's exit: ``shutdown`` (which waits) off the loop; a cancellation aborts first.

    ``cancelled``: the block itself ends by a cancellation. A cancellation
    of this wait aborts the batch, waits for it to end, and is raised then.
    """
    import asyncio

    if cancelled:
        abort_all()
    waiting = asyncio.ensure_future(_off_loop(shutdown))
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        if waiting.done():
            raise
        abort_all()
        with contextlib.suppress(asyncio.CancelledError):  # cancelled again: the batch ends all the same
            await asyncio.shield(waiting)
        raise


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the loop's default executor, a thread: a store read must not block the loop."""
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def run_task_coroutine(task: Any, coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run the coroutine of ``task``'s ``async def run`` to its end in a new event loop.

    An abort cancels it at its next ``await`` (``_watch``).
    """
    import asyncio

    async def main() -> Any:
        job = asyncio.ensure_future(coroutine)
        watcher = asyncio.ensure_future(_watch(task, job))
        try:
            return await job
        except asyncio.CancelledError:
            if not task._saw_abort:  # cancelled by the task's own code: a failure like any other
                raise RuntimeError(f"task {task.task_id} was cancelled, but no abort was asked") from None
            raise TaskAborted(f"task {task.task_id} aborted: cancelled at an await", task_id=task.task_id) from None
        finally:
            watcher.cancel()

    return asyncio.run(main())


async def _watch(task: Any, job: asyncio.Future[Any]) -> None:
    import asyncio

    while not task.is_aborted():  # sets ``_saw_abort`` once true
        await asyncio.sleep(WATCH_INTERVAL)
    job.cancel()
