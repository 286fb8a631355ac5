"""Progress bars: one for the batch, one per running task. The one module that imports tqdm.

The same renderer serves ``Executor(progress=True)`` (fed from the
futures in memory) and ``localabort watch`` (fed from the store).

On a terminal, tqdm draws and redraws the bars in place. In a Jupyter
notebook, whose output redraws a line but cannot move up to another, one
bar: the batch's, with the running tasks' progress at its end. Anywhere else (a
log file, CI) the escape codes would fill the file, so the batch is
written as a plain line every ``PLAIN_INTERVAL`` seconds, and once at the
end. Either way the last line says how the batch ended: a batch with tasks
aborted or failed does not end on a line that reads like success.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, TextIO, Tuple

from tqdm import tqdm

from ._states import ABORTED, FAILURE, READY_STATES, RETRY, STARTED, SUCCESS
from ._text import printable

__all__ = ["PLAIN_INTERVAL", "Bars", "TaskView", "label", "traceback_above_bars"]

#: Seconds between two plain lines when the output is not a terminal.
PLAIN_INTERVAL = 10.0


class TaskView(NamedTuple):
    """What a bar shows of one task."""

    id: str
    name: str
    state: str
    progress: Optional[Tuple[float, Optional[float]]]
    key: Optional[str] = None


def label(view: TaskView) -> str:
    """A task's bar label: its class name, then its key, or else the end of its id.

    Ids are time first, so the tasks of one batch share their first
    characters; the last 8 tell them apart, and ``localabort show``,
    ``abort`` and ``status`` accept them.

    >>> label(TaskView("01a21166-f2c4-7e1a-9c3b-5d2e8f0a1b7c", "jobs.Crunch", "STARTED", None))
    'Crunch 8f0a1b7c'
    >>> label(TaskView("01a21166-f2c4-7e1a-9c3b-5d2e8f0a1b7c", "jobs.Crunch", "STARTED", None, key="2026-11.csv"))
    'Crunch 2026-11.csv'
    >>> label(TaskView("01a21166-f2c4-7e1a-9c3b-5d2e8f0a1b7c", "__main__.<lambda> (cell.py:3)", "STARTED", None))
    '<lambda> 8f0a1b7c'
    """
    short = view.name.split(" (", 1)[0].rsplit(".", 1)[-1]  # "(cell.py:3)": where a lambda was defined
    return printable(f"{short} {view.key if view.key else view.id[-8:]}")  # a key is any text


def _whole(x: Optional[float]) -> Any:
    """``x`` as an int when it is a whole number, so a bar reads 1234567/10000000, not 1.23457e+06."""
    return int(x) if x is not None and x == int(x) else x


class Bars:
    """tqdm bars for a batch of tasks: ``update(views)`` redraws them, ``close()`` ends them.

    >>> import io
    >>> out = io.StringIO()
    >>> bars = Bars(file=out, max_tasks=2)
    >>> bars.update([TaskView("a1", "Crunch", "ABORTED", (5, 10)), TaskView("b2", "Crunch", "SUCCESS", None)])
    >>> bars.close()
    >>> out.getvalue().splitlines()[-1]
    'batch: 2/2 done: ok=1 aborted=1 failed=0'
    """

    def __init__(self, file: Optional[TextIO] = None, max_tasks: int = 8, desc: str = "batch") -> None:
        self.file = file or sys.stderr
        self.max_tasks = max_tasks
        self.desc = desc
        # A notebook's output redraws a line in place (``\r``) but has no cursor to move up: one bar, the batch's.
        self.notebook = _is_notebook(self.file)
        self.plain = not self.notebook and not _is_terminal(self.file)
        self.batch: Any = None
        if not self.plain:
            self.batch = tqdm(total=0, desc=desc, unit="task", file=self.file, position=0, dynamic_ncols=True)
        self.tasks: Dict[str, Tuple[Any, int]] = {}  # task id -> (its bar, its line)
        self.free: List[int] = list(range(1, max_tasks + 1))
        self.states: List[str] = []
        self.next_line = 0.0  # when a plain line is due

    def update(self, views: Iterable[TaskView]) -> None:
        views = list(views)
        self.states = [v.state for v in views]
        if self.plain:
            if time.monotonic() >= self.next_line:
                self.next_line = time.monotonic() + PLAIN_INTERVAL
                self._line()
            return
        self.batch.total = len(views)
        self.batch.n = sum(state in READY_STATES for state in self.states)
        running = {v.id: v for v in views if v.state == STARTED}
        if self.notebook:  # the running tasks in the batch's line
            shown = [_percent(v) for v in list(running.values())[: self.max_tasks]]
            self.batch.set_postfix_str(" | ".join([self._counts(), *shown]), refresh=False)
            self.batch.refresh()
            return
        self.batch.set_postfix_str(self._counts(), refresh=False)
        self.batch.refresh()
        for task_id in [t for t in self.tasks if t not in running]:
            bar, line = self.tasks.pop(task_id)
            self.free.append(line)
            bar.close()
        for view in running.values():
            done, total = view.progress if view.progress is not None else (0, None)
            if view.id not in self.tasks:
                if not self.free:
                    continue
                line = min(self.free)  # the highest free line: no gap between the bars
                self.free.remove(line)
                # Counted from what it had done when first seen: the rate and ETA are those of what is watched.
                bar = tqdm(desc=label(view), total=_whole(total), initial=_whole(done), file=self.file, position=line,
                           leave=False, dynamic_ncols=True)  # fmt: skip
                self.tasks[view.id] = (bar, line)
            bar = self.tasks[view.id][0]
            bar.total, bar.n = _whole(total), _whole(done)
            bar.refresh()

    def close(self) -> None:
        for bar, _ in self.tasks.values():
            bar.close()
        self.tasks.clear()
        if self.plain:
            self._line()
            return
        failed = self.states.count(ABORTED) + self.states.count(FAILURE)
        if failed:  # its last line must not read like success
            self.batch.set_description_str(f"{self.desc} ({self._failures()})", refresh=False)
            self.batch.colour = "red"
        self.batch.refresh()
        self.batch.close()

    def _counts(self) -> str:
        states = self.states
        retrying = f" retrying={states.count(RETRY)}" if RETRY in states else ""
        return f"ok={states.count(SUCCESS)} aborted={states.count(ABORTED)} failed={states.count(FAILURE)}{retrying}"

    def _failures(self) -> str:
        words = [f"{self.states.count(state)} {state}" for state in (ABORTED, FAILURE) if state in self.states]
        return ", ".join(words)

    def _line(self) -> None:
        done = sum(state in READY_STATES for state in self.states)
        running = self.states.count(STARTED)
        now = f", {running} running" if running and done < len(self.states) else ""
        print(f"{self.desc}: {done}/{len(self.states)} done{now}: {self._counts()}", file=self.file, flush=True)


def traceback_above_bars() -> None:
    """Make the interpreter print an uncaught exception's traceback with the bars cleared, not drawn over it.

    A script without a ``with`` block dies of its Ctrl-C before the
    executor stops, so its traceback is printed while the bars are still
    drawn. This ``sys.excepthook`` clears them first, and holds tqdm's lock
    while the traceback is written, so no bar is drawn into it; the bars
    are drawn again below it. Installed once per process.
    """
    previous = sys.excepthook
    if getattr(previous, "localabort_bars", False):
        return

    def hook(exc_type: Any, exc: Any, tb: Any) -> None:
        with tqdm.get_lock():  # type: ignore[no-untyped-call]
            for bar in list(getattr(tqdm, "_instances", ())):
                if hasattr(bar, "pos"):  # one still being made (tqdm lists it first) has drawn nothing yet
                    bar.clear(nolock=True)
            previous(exc_type, exc, tb)

    hook.localabort_bars = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _percent(view: TaskView) -> str:
    """A running task in a few characters: its label, and how far it is if it said."""
    done, total = view.progress if view.progress is not None else (0, None)
    return f"{label(view)} {100 * done / total:.0f}%" if total else f"{label(view)} {done:g}"


def _is_notebook(file: Any) -> bool:
    """Whether ``file`` is a Jupyter kernel's output stream (ipykernel's ``OutStream``)."""
    return type(file).__module__.startswith("ipykernel.")


def _is_terminal(file: Any) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
