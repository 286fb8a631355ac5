"""A small Starlette service that runs CPU-bound jobs on a localabort Executor, and stops them when nobody waits.

    pip install "localabort[web]"
    python examples/service.py jobs.sqlite          # prints its URL; Ctrl-C stops it

- ``GET /crunch?n=N`` runs a job and answers with its result. If the client
  goes away first (a closed tab, a timeout), the job is aborted: the
  endpoint awaits the future, and ``cancel_on_disconnect`` cancels that
  await when the client disconnects.
- ``POST /jobs?n=N`` starts a job in the background and answers its id;
  ``GET /jobs/ID`` says its state; ``DELETE /jobs/ID`` aborts it. Any other
  process can do the same by id (``localabort abort jobs.sqlite ID``).

On shutdown (Ctrl-C) every unfinished job is aborted, and each ends in a
recorded final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from typing import Any, AsyncIterator, Awaitable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # crunch.py, beside this file

from crunch import Crunch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localabort import AbortableAsyncResult, Executor, TaskAborted, UnknownTask

STORE = os.environ.get("JOBS_STORE", "jobs.sqlite")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def cancel_on_disconnect(request: Request, work: Awaitable[Any]) -> Any:
    """Await ``work``; if the client disconnects first, cancel it (for a future: abort its task): ``ClientGone``."""
    job = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not job.done():
        job.cancel()  # ``await future`` inside: the task is aborted
        raise ClientGone
    return job.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def crunch(request: Request) -> JSONResponse:
    n = int(request.query_params.get("n", "1000"))
    future = request.app.state.executor.submit(Crunch, n)
    try:
        squares = await cancel_on_disconnect(request, future)
    except TaskAborted:
        return JSONResponse({"id": future.id, "state": future.state}, status_code=409)
    except ClientGone:
        return Response(status_code=499)  # nobody reads it: nginx's "client closed request"
    return JSONResponse({"id": future.id, "state": future.state, "count": len(squares), "sum": sum(squares)})


async def start_job(request: Request) -> JSONResponse:
    n = int(request.query_params.get("n", "1000"))
    future = request.app.state.executor.submit(Crunch, n)
    return JSONResponse({"id": future.id}, status_code=202)


async def job_state(request: Request) -> JSONResponse:
    try:
        job = AbortableAsyncResult(request.path_params["id"], store=STORE)
        state = await asyncio.get_running_loop().run_in_executor(None, lambda: job.state)
    except UnknownTask as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse({"id": job.id, "state": state})


async def abort_job(request: Request) -> JSONResponse:
    try:
        job = AbortableAsyncResult(request.path_params["id"], store=STORE)
        asked = await asyncio.get_running_loop().run_in_executor(None, job.abort)
    except UnknownTask as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse({"id": job.id, "aborted": asked})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    executor = Executor(max_workers=2, store=STORE)
    app.state.executor = executor
    try:
        yield
    finally:
        executor.abort_all()  # what still runs at shutdown stops at its next check
        await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)  # waits, off the loop


app = Starlette(
    routes=[
        Route("/crunch", crunch),
        Route("/jobs", start_job, methods=["POST"]),
        Route("/jobs/{id}", job_state, methods=["GET"]),
        Route("/jobs/{id}", abort_job, methods=["DELETE"]),
    ],
    lifespan=lifespan,
)


def main() -> None:
    import uvicorn

    global STORE
    STORE = sys.argv[1] if len(sys.argv) > 1 else STORE
    sock = socket.socket()
    sock.bind(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0))
    sock.listen(128)  # a client that calls at once waits for uvicorn, and is not refused
    print(f"serving on http://127.0.0.1:{sock.getsockname()[1]}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stopped gracefully, then passed the Ctrl-C on
        sys.exit(130)


if __name__ == "__main__":
    main()
