"""The dashboard: a live page over one store on this machine (``localabort serve``, ``Executor(dashboard=True)``).

The page (``_static/``: plain HTML, CSS and JavaScript, nothing to build)
reads a ``Board`` of the store through a small JSON API, and follows it
live by server-sent events: one stream per open page, a snapshot each
``INTERVAL`` (slower when the store is so large that a snapshot takes long:
never more than a fifth of a core per page). Starlette serves it and
uvicorn runs it, in this thread (the command) or a thread of its own (an
executor's batch); both come with the ``web`` extra.

Safe by default:

- it binds 127.0.0.1 unless told otherwise, and answers only requests
  whose ``Host`` names this machine (no DNS rebinding);
- every request but the page's static files needs the token that the
  printed URL carries, as Jupyter's does: in the ``X-Localabort-Token``
  header, or in the query of a ``GET`` (the page's URL, its event stream);
  an action takes it from the header only, and is refused from another
  site (``Sec-Fetch-Site``, ``Origin``), so no other page can make a
  browser act;
- ``read_only`` serves no actions at all;
- nothing stored is unpickled: the page shows the text the store keeps.
"""

from __future__ import annotations

import hmac
import json
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Optional

from ._board import PAGE, Board
from ._interrupt import start_thread
from ._procs import asker
from ._store import Store

__all__ = ["INTERVAL", "NEEDS", "Dashboard", "missing"]

#: The least time between two snapshots of one page's stream (seconds).
INTERVAL = 0.5
#: A stream waits this many times as long as its last snapshot took, if that is longer than ``INTERVAL``.
SLOWDOWN = 5
#: How to get what the dashboard needs, for the error that says it is missing.
NEEDS = 'pip install "localabort[web]"'
TOKEN_HEADER = "x-localabort-token"
_STATIC = Path(__file__).with_name("_static")
_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_LOCAL_NAMES = {"127.0.0.1", "localhost", "::1"}
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's URL holds the token
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
_NO_TOKEN = "this dashboard needs its token: open the URL that started it printed (it ends in ?token=...)"


def _problem(exc: BaseException) -> str:
    """An error of the store, in one line: its type and the first line of its message."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def missing() -> Optional[str]:
    """The one-line error if the ``web`` extra is not installed, else ``None``."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return f"the dashboard needs {exc.name}, which the web extra installs: {NEEDS}"
    return None


class Dashboard:
    """The dashboard of one store, bound to its address at once (a port in use fails here, in one line).

    ``start()`` serves it from a thread, ``run()`` from this one until
    Ctrl-C; ``stop()`` ends either and frees the port. ``url`` carries the
    token every request needs.

    >>> import os, tempfile, urllib.request
    >>> from localabort import Executor
    >>> path = os.path.join(tempfile.mkdtemp(), "d.sqlite")
    >>> Executor(max_workers=1, store=path).shutdown()
    >>> board = Dashboard(Store.open(path)).start()
    >>> with urllib.request.urlopen(board.url) as page:
    ...     page.status
    200
    >>> board.stop()
    """

    def __init__(
        self, store: Store, *, host: str = "127.0.0.1", port: int = 0, read_only: bool = False,
        token: Optional[str] = None,
    ) -> None:  # fmt: skip
        problem = missing()
        if problem is not None:
            raise ImportError(problem)
        import uvicorn

        # A handle of its own: its reads never wait on the pool of an executor it serves, and stop() closes it.
        self.board = Board(Store(store.url, create=False))
        self.read_only = read_only
        self.token = token or secrets.token_urlsafe(24)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            hint = "pass another --port, or --port 0 for a free one" if port else "pass another --host"
            raise OSError(exc.errno, f"cannot serve the dashboard on {host}:{port}: {exc.strerror}; {hint}") from None
        self._socket.listen(128)
        self.host, self.port = host, self._socket.getsockname()[1]
        everywhere = host in ("0.0.0.0", "::")  # every address: any name may reach it
        shown = socket.gethostname() if everywhere else f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/?token={self.token}"
        self._hosts = None if everywhere else _LOCAL_NAMES | {host, shown}
        config = uvicorn.Config(
            _app(self), log_level="warning", lifespan="off", timeout_graceful_shutdown=2, access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread: Optional[threading.Thread] = None
        self._ender: Optional[threading.Thread] = None  # stops it when an executor ends
        self._warm: Optional[threading.Thread] = None

    def start(self, until: Optional[threading.Event] = None) -> Dashboard:
        """Serve from a thread of its own (a daemon: it never keeps the interpreter alive); return ``self``.

        ``until``: stop once this event is set (an executor's end).
        """
        self._thread = threading.Thread(target=self.run, name="localabort-dashboard", daemon=True)
        start_thread(self._thread)
        if until is not None:
            self._ender = threading.Thread(
                target=self._stop_on, args=(until,), name="localabort-dashboard-end", daemon=True
            )
            start_thread(self._ender)
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"the dashboard did not start on {self.host}:{self.port} (see the error above)")
        return self

    def _stop_on(self, event: threading.Event) -> None:
        event.wait()
        self.stop()

    def run(self) -> None:
        """Serve from this thread until ``stop()``, or Ctrl-C (SIGINT, SIGTERM) if this is the main thread."""
        # The finished tasks are counted before the first page asks (half a second on 1,000,000 tasks).
        self._warm = threading.Thread(target=self.board.warm, name="localabort-dashboard-warm", daemon=True)
        start_thread(self._warm)
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def stop(self) -> None:
        """Stop serving: open streams end, the port is freed, and the thread (if any) has ended on return."""
        self._server.should_exit = True
        for thread in (self._thread, self._ender, self._warm):
            if thread is not None and thread is not threading.current_thread():
                thread.join(30)
        self._socket.close()
        self.board.store.dispose()

    @property
    def stopping(self) -> bool:
        return bool(self._server.should_exit)

    def allowed(self, request: Any, action: bool) -> Optional[str]:
        """Why ``request`` is refused, or ``None``: the Host, the token, and for an action, where it came from."""
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
        if self._hosts is not None and name not in self._hosts:
            return f"this dashboard answers only for {self.host} (the request named {host!r})"
        given = request.headers.get(TOKEN_HEADER) or ("" if action else request.query_params.get("token", ""))
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return _NO_TOKEN
        if action:
            if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return "an action from another site is refused"
            origin = request.headers.get("origin")
            if origin is not None and origin != f"http://{host}":
                return f"an action from {origin} is refused"
        return None


def _app(dashboard: Dashboard) -> Any:
    """The Starlette application of ``dashboard``: its page, its JSON API and its event stream."""
    import anyio.to_thread
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    board = dashboard.board

    def refused(why: str) -> Response:
        return JSONResponse({"error": why}, status_code=403, headers=_HEADERS)

    def answer(value: Any, status: int = 200) -> Response:
        return JSONResponse(value, status_code=status, headers=_HEADERS)

    def guarded(action: bool) -> Callable[[Callable[[Request], Any]], Callable[[Request], Any]]:
        def wrap(endpoint: Callable[[Request], Any]) -> Callable[[Request], Any]:
            async def checked(request: Request) -> Response:
                why = dashboard.allowed(request, action)
                if why is not None:
                    return refused(why)
                try:
                    return await endpoint(request)  # type: ignore[no-any-return]
                except ValueError as exc:  # a bad filter, cursor or number: the user's to fix
                    return answer({"error": str(exc)}, 400)
                except Exception as exc:  # the store is away, locked or broken: said in one line
                    return answer({"error": _problem(exc)}, 503)

            return checked

        return wrap

    async def page(request: Request) -> Response:
        why = dashboard.allowed(request, action=False)
        if why is not None:
            return Response(f"localabort: {why}\n", status_code=403, media_type="text/plain", headers=_HEADERS)
        html = (_STATIC / "dashboard.html").read_text(encoding="utf-8")
        return Response(html, media_type="text/html", headers=_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _FILES:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response((_STATIC / name).read_bytes(), media_type=_FILES[name], headers=_HEADERS)

    def filters(request: Request) -> Dict[str, Any]:
        q = request.query_params
        limit = int(q.get("limit", PAGE))
        if not 1 <= limit <= 500:
            raise ValueError(f"limit must be from 1 to 500, not {limit}")
        return {
            "state": q.get("state") or None, "name": q.get("name") or None, "executor": q.get("executor") or None,
            "before": q.get("before") or None, "limit": limit,
        }  # fmt: skip

    def snapshot(chosen: Dict[str, Any]) -> Dict[str, Any]:
        return dict(board.snapshot(**chosen), read_only=dashboard.read_only)

    @guarded(action=False)
    async def snapshot_once(request: Request) -> Response:
        chosen = filters(request)
        return answer(await anyio.to_thread.run_sync(snapshot, chosen))

    async def event(chosen: Dict[str, Any], first: bool = False) -> str:
        """The next event of a stream: a snapshot, or a ``problem`` if the store cannot be read (it is retried).

        The ``first`` raises a ``ValueError`` (a bad filter or cursor): a 400, not a stream.
        """
        try:
            snap = await anyio.to_thread.run_sync(snapshot, chosen)
        except Exception as exc:  # the store is away, locked or broken: the page says so, and the stream goes on
            if first and isinstance(exc, ValueError):
                raise
            return f"event: problem\ndata: {json.dumps({'error': _problem(exc)})}\n\n"
        return f"data: {json.dumps(snap, separators=(',', ':'))}\n\n"

    @guarded(action=False)
    async def events(request: Request) -> Response:
        chosen = filters(request)
        first = await event(chosen, first=True)

        async def stream() -> AsyncIterator[str]:
            said: Optional[str] = first
            while not dashboard.stopping:
                began = time.monotonic()
                if said is None:
                    said = await event(chosen)
                took = time.monotonic() - began
                yield said
                said = None
                pause = time.monotonic() + max(INTERVAL, SLOWDOWN * took)
                while not dashboard.stopping and time.monotonic() < pause:
                    await anyio.sleep(0.05)

        headers = dict(_HEADERS, **{"X-Accel-Buffering": "no"})
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    @guarded(action=False)
    async def task(request: Request) -> Response:
        found = await anyio.to_thread.run_sync(board.task, request.path_params["task_id"])
        return answer(found) if found is not None else answer({"error": "no such task in this store"}, 404)

    async def terminate_after(request: Request) -> Optional[float]:
        body = json.loads(await request.body() or b"{}")
        if not isinstance(body, dict):
            raise ValueError('the body is a JSON object: {} or {"terminate_after": seconds}')
        value = body.get("terminate_after")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ValueError(f"terminate_after must be a number of seconds, 0 or more, not {value!r}")
        return float(value)

    @guarded(action=True)
    async def abort(request: Request) -> Response:
        after = await terminate_after(request)
        task_id = request.path_params["task_id"]
        asked = await anyio.to_thread.run_sync(board.abort, task_id, after, asker("localabort dashboard"))
        return answer(asked) if asked is not None else answer({"error": "no such task in this store"}, 404)

    @guarded(action=True)
    async def abort_batch(request: Request) -> Response:
        after = await terminate_after(request)
        executor_id = request.path_params["executor_id"]
        by = asker("localabort dashboard, whole batch")
        ids = await anyio.to_thread.run_sync(board.abort_batch, executor_id, after, by)
        return answer({"executor_id": executor_id, "asked": len(ids)})

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/snapshot", snapshot_once),
        Route("/api/events", events),
        Route("/api/tasks/{task_id:path}", task),
    ]
    if not dashboard.read_only:  # no action is served at all
        routes[-1:-1] = [
            Route("/api/tasks/{task_id:path}/abort", abort, methods=["POST"]),
            Route("/api/batches/{executor_id}/abort", abort_batch, methods=["POST"]),
        ]
    return Starlette(routes=routes)
