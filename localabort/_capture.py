"""What a task says while it runs, and what it used: captured in the process that runs it.

``Capture`` tees ``sys.stdout`` and ``sys.stderr`` and adds a handler to
the root logger; while a task runs, what it writes and the records it logs
also go to its ``Tail``, the last ``limit`` bytes of its log, counting what
it dropped. What it wrote still reaches where it did (the terminal, the
script's handlers): capture is a tee, not a theft. The tail travels as one
text, not per line: its runner sends it when the task ends and, while it
runs, every ``FLUSH_EVERY`` s it has changed (``sent``), so a task that
logs 100,000 lines a second costs the parent one message a flush.

Records can also be *forwarded*: under spawn and forkserver a worker has
no handlers of its own, so the records a task logs are kept (``records``)
for the parent to hand to its handlers. Every record made in a process
that captures carries the running task's id as ``record.task_id`` (``-``
outside a task), for a ``%(task_id)s`` in a format.

``Usage`` measures what a task used: the CPU time of its process and of
the processes it started (once they are waited for), and its process's
peak resident memory while it ran, which Linux keeps exactly (the
high-water mark, reset as each task starts through
``/proc/self/clear_refs``): no sampling, nothing missed in the process
itself; a process the task started counts with its own peak, once waited
for (``RUSAGE_CHILDREN``), if that is the larger.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import resource
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = [
    "DEFAULT_LOG_LIMIT", "FLUSH_EVERY", "NO_TASK", "Capture", "Relay", "Tail", "Usage", "dropped_line",
    "install_task_ids", "log_text",
]  # fmt: skip

#: Bytes of each task's log the store keeps, unless the executor or the call says otherwise.
DEFAULT_LOG_LIMIT = 64 * 1024
#: Seconds between two sends of a running task's changed log.
FLUSH_EVERY = 0.5
#: ``record.task_id`` outside any task.
NO_TASK = "-"

#: A log as it travels and is stored: its text, and how many bytes before it were dropped.
Log = Tuple[str, int]


def dropped_line(dropped: int) -> str:
    """The line that stands for what a bounded log dropped.

    >>> dropped_line(2048)
    '[localabort: 2,048 earlier bytes of this log were dropped]\\n'
    """
    return f"[localabort: {dropped:,} earlier bytes of this log were dropped]\n"


def log_text(log: Optional[Log]) -> str:
    """A stored log as a reader shows it: a line for what was dropped, then the text (``""``: none).

    >>> log_text(("world\\n", 6))
    '[localabort: 6 earlier bytes of this log were dropped]\\nworld\\n'
    """
    if log is None:
        return ""
    text, dropped = log
    return dropped_line(dropped) + text if dropped else text


class Tail:
    """The last ``limit`` bytes (UTF-8) of one task's log, and how many came before them.

    A write is appended as it is, and counted in characters: the bytes are
    reckoned only when the text is read, or when what is held passes twice
    the limit, so a task that prints a line at a time pays a list append
    for it. Text that is not valid UTF-8 (lone surrogates) is kept escaped.

    >>> tail = Tail(8)
    >>> tail.add("hello\\n"); tail.add("world\\n")
    >>> tail.text()
    ('o\\nworld\\n', 4)
    """

    __slots__ = ("chunks", "dropped", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: List[str] = []
        self.size = 0  # characters in ``chunks``: at most their bytes
        self.dropped = 0  # bytes dropped from the front

    def add(self, text: str) -> None:
        self.chunks.append(text)
        self.size += len(text)
        if self.size > 2 * self.limit:
            self._cut()

    def _cut(self) -> None:
        """Keep the last ``limit`` bytes, as one chunk, and count what goes."""
        data = "".join(self.chunks).encode("utf-8", "backslashreplace")
        excess = len(data) - self.limit
        if excess > 0:
            data = data[excess:]
            self.dropped += excess
        text = data.decode("utf-8", "replace")
        self.chunks, self.size = [text], len(text)

    def text(self) -> Log:
        """The log kept, cut to ``limit`` bytes, and the bytes dropped before it."""
        self._cut()
        return self.chunks[0], self.dropped


class Usage:
    """What each task used in this process: ``begin()`` as a task starts, ``end()`` as it ends.

    One per process (a worker's tasks run one at a time). The CPU time is
    the process's own (``time.process_time``), with what the processes the
    task started used, once waited for: the growth of ``RUSAGE_CHILDREN``
    since the last task ended, read once a task.

    >>> usage = Usage()
    >>> usage.begin()
    >>> pid, cpu, peak = usage.end()
    >>> pid == os.getpid() and cpu >= 0 and (peak is None or peak > 0)
    True
    >>> usage.close()
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        try:  # "reset the peak resident set size" on each write of "5" (proc(5), Linux 4.0)
            self._clear_refs: Optional[int] = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:  # not Linux, or /proc read-only: no peak
            self._clear_refs = None
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children = (children.ru_utime + children.ru_stime, children.ru_maxrss)
        self._cpu = 0.0
        self._exact = False

    def begin(self) -> None:
        """A task starts: its peak memory is counted from what the process holds now."""
        self._exact = False
        if self._clear_refs is not None:
            try:
                os.write(self._clear_refs, b"5")
                self._exact = True
            except OSError:
                pass
        self._cpu = time.process_time()

    def end(self) -> Tuple[int, float, Optional[int]]:
        """``(pid, cpu_seconds, peak_rss)`` of the task since ``begin``; ``peak_rss`` (bytes) ``None`` if unknown."""
        cpu = time.process_time() - self._cpu
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent, peak_before = self._children
        self._children = (children.ru_utime + children.ru_stime, children.ru_maxrss)
        cpu += self._children[0] - spent
        peak: Optional[int] = None
        if self._exact:
            own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = 1024 * max(own, children.ru_maxrss if children.ru_maxrss > peak_before else 0)  # Linux: KiB
        return self._pid, round(cpu, 6), peak

    def close(self) -> None:
        if self._clear_refs is not None:
            os.close(self._clear_refs)
            self._clear_refs = None


class _Tee(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` as a task sees it: the stream, and a copy of each write to the task's log."""

    def __init__(self, stream: Any, capture: Capture) -> None:
        self._stream, self._capture = stream, capture
        self._shut = False  # the task closed it: writes fail until the next task, as on a closed file

    def write(self, text: str) -> int:
        if self._shut:
            raise ValueError("I/O operation on closed file.")
        written: int = self._stream.write(text)
        self._capture.add(text)
        return written

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:  # a task's close must not close the worker's own stream for the tasks after it
        self._shut = True

    @property
    def closed(self) -> bool:
        return self._shut

    def reopen(self) -> None:
        self._shut = False

    def __getattr__(self, name: str) -> Any:  # encoding, buffer, fileno, isatty...: the stream's own
        return getattr(self._stream, name)

    def fileno(self) -> int:
        return int(self._stream.fileno())

    def isatty(self) -> bool:
        return bool(self._stream.isatty())

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._stream, "encoding", "utf-8"))

    @property
    def errors(self) -> Optional[str]:  # type: ignore[override]
        return getattr(self._stream, "errors", None)


class _Records(logging.Handler):
    """The root logger's handler that copies each record logged during a task into its log (and keeps it)."""

    def __init__(self, capture: Capture) -> None:
        super().__init__(logging.NOTSET)
        self.capture = capture
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        capture = self.capture
        if capture.task_id is NO_TASK or capture.stopped:
            return
        if capture.limit:
            try:
                line = self.format(record) + "\n"
            except Exception:
                self.handleError(record)
                return
            capture.add(line)
        if capture.forward:
            capture.keep(record)


def _portable(record: logging.LogRecord) -> Dict[str, Any]:
    """``record`` as another process can rebuild it (``logging.makeLogRecord``): its message and traceback as text.

    As ``QueueHandler.prepare`` does, not its arguments or exception, which may not pickle.
    """
    fields = dict(record.__dict__)
    fields["msg"], fields["args"] = record.getMessage(), None
    if record.exc_info:
        fields["exc_text"] = record.exc_text or logging.Formatter().formatException(record.exc_info)
    fields["exc_info"] = None
    return fields


def install_task_ids(current: Callable[[], str]) -> None:
    """Give every ``LogRecord`` made in this process a ``task_id``: ``current()``, the task running (``NO_TASK``).

    Chains to the record factory in place, once per process.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_localabort", False):
        factory._localabort_current = current  # type: ignore[attr-defined]
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if not hasattr(record, "task_id"):  # forwarded from a worker: it has the task's already
            record.task_id = make._localabort_current()  # type: ignore[attr-defined]
        return record

    make._localabort = True  # type: ignore[attr-defined]
    make._localabort_current = current  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)


# ``%(task_id)s`` in a format works from the moment localabort is imported, in any process: "-" outside a task.
install_task_ids(lambda: NO_TASK)


class Capture:
    """A process's capture of what its tasks say: the tees, the root logger's handler, and the running task's log.

    ``begin(task_id, limit, tag)`` and ``end()`` bracket each task
    (``limit`` 0: no log kept for it). ``forward``: also keep the task's
    records, for ``end()`` and ``sent()`` to hand to the parent. While a
    task runs, its runner asks ``sent()`` every ``FLUSH_EVERY`` s for what
    changed, to send it on (with ``tag``, the task's as ``begin`` had it).

    >>> capture = Capture(forward=False)
    >>> capture.begin("t1", 1024)
    >>> print("hi")
    hi
    >>> capture.end()
    (('hi\\n', 0), [])
    >>> capture.close()
    """

    def __init__(self, forward: bool) -> None:
        self.forward = forward
        self.lock = threading.Lock()
        self.tail: Optional[Tail] = None  # the running task's, once it wrote something
        self.limit = 0  # the running task's ``log_limit``
        self.task_id = NO_TASK
        self.tag: Any = None
        self.changed = False
        self.stopped = False
        self.records: List[Dict[str, Any]] = []
        self._tees: List[Tuple[str, _Tee]] = []
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None:  # none under pythonw, or a daemon that closed it
                tee = _Tee(stream, self)
                setattr(sys, name, tee)
                self._tees.append((name, tee))
        self._handler = _Records(self)
        logging.getLogger().addHandler(self._handler)
        install_task_ids(lambda: self.task_id)
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """A process the task forked: what it writes still reaches the streams, but no log (its own lock)."""
        self.lock = threading.Lock()
        self.stopped = True

    def add(self, text: str) -> None:
        if not self.limit or self.stopped:
            return
        with self.lock:
            if self.task_id is NO_TASK:  # between tasks
                return
            if self.tail is None:  # made on the task's first write: a quiet task costs none
                self.tail = Tail(self.limit)
            self.tail.add(text)
            self.changed = True

    def keep(self, record: logging.LogRecord) -> None:
        fields = _portable(record)
        with self.lock:
            self.records.append(fields)

    def begin(self, task_id: str, limit: int, tag: Any = None) -> None:
        """Task ``task_id`` starts: capture the last ``limit`` bytes of its log (``0``: none)."""
        for name, tee in self._tees:  # a task before it may have closed or replaced them
            tee.reopen()
            setattr(sys, name, tee)
        with self.lock:
            self.task_id, self.tag, self.limit = task_id, tag, limit
            self.tail, self.changed = None, False

    def end(self) -> Tuple[Optional[Log], List[Dict[str, Any]]]:
        """The task ended: its log (``None`` if it logged nothing), and the records not yet taken."""
        with self.lock:
            tail, self.tail, self.task_id = self.tail, None, NO_TASK
            records, self.records = self.records, []
            changed, self.changed = self.changed, False
        return (tail.text() if tail is not None and changed else None), records  # else sent whole already

    def sent(self) -> Tuple[Any, Optional[Log], List[Dict[str, Any]]]:
        """The running task's tag, its log if it changed since last asked, and its records since."""
        with self.lock:
            log = self.tail.text() if self.tail is not None and self.changed else None
            records, self.records, self.changed = self.records, [], False
            return self.tag, log, records

    def send_changes(self, lock: Any, send: Callable[[Any, Optional[Log], List[Dict[str, Any]]], bool]) -> None:
        """Every ``FLUSH_EVERY`` s, ``send(tag, log, records)`` what changed, until ``send`` returns ``False``.

        Under ``lock``, from taking what changed to sending it: the runner
        takes the same lock around ``end()`` and the task's last message,
        so an earlier log never lands after it. For a thread of its own.
        """
        while True:
            time.sleep(FLUSH_EVERY)
            with lock:
                tag, log, records = self.sent()
                if (log is not None or records) and not send(tag, log, records):
                    return

    def close(self) -> None:
        """Put the streams and the root logger back as they were (the worker exits, or a test ends)."""
        logging.getLogger().removeHandler(self._handler)
        for name, tee in self._tees:
            if getattr(sys, name) is tee:
                setattr(sys, name, tee._stream)


class Relay:
    """The parent's side of forwarded records: a thread of its own hands them to this process's handlers.

    Not the manager's thread: a slow handler (a network one, say) must not
    hold up the batch. Records are handled in the order they came, each by
    its logger's handlers as if it had been logged here, its ``task_id``
    kept.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Optional[List[Dict[str, Any]]]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None

    def put(self, records: List[Dict[str, Any]]) -> None:
        if self._thread is None:
            from ._interrupt import start_thread

            self._thread = threading.Thread(target=self._hand, name="localabort-logs", daemon=True)
            start_thread(self._thread)
        self._queue.put(records)

    def _hand(self) -> None:
        while True:
            records = self._queue.get()
            if records is None:
                return
            for fields in records:
                record = logging.makeLogRecord(fields)
                logger = logging.getLogger(record.name)
                if logger.isEnabledFor(record.levelno):  # what this process's own configuration lets through
                    logger.handle(record)

    def close(self, timeout: float = 5.0) -> None:
        """Hand over what came, within ``timeout`` s, and stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
