"""Progress bars: one for the batch, one per running task. The one module that imports tqdm.

The same renderer serves ``Executor(progress=True)`` (fed from the
futures in memory) and ``localabort watch`` (fed from the store).
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, TextIO, Tuple

from tqdm import tqdm

from ._states import ABORTED, FAILURE, READY_STATES, STARTED, SUCCESS

__all__ = ["Bars", "TaskView"]


class TaskView(NamedTuple):
    """What a bar shows of one task."""

    id: str
    name: str
    state: str
    progress: Optional[Tuple[float, Optional[float]]]


class Bars:
    """tqdm bars for a batch of tasks: ``update(views)`` redraws them, ``close()`` ends them.

    >>> import io
    >>> out = io.StringIO()
    >>> bars = Bars(file=out, max_tasks=2)
    >>> bars.update([TaskView("a1", "Crunch", "STARTED", (5, 10)), TaskView("b2", "Crunch", "SUCCESS", None)])
    >>> bars.close()
    >>> "1/2" in out.getvalue() and "5/10" in out.getvalue()
    True
    """

    def __init__(self, file: Optional[TextIO] = None, max_tasks: int = 8, desc: str = "batch") -> None:
        self.file = file or sys.stderr
        self.max_tasks = max_tasks
        self.batch = tqdm(total=0, desc=desc, unit="task", file=self.file, position=0, dynamic_ncols=True)
        self.tasks: Dict[str, Tuple[Any, int]] = {}  # task id -> (its bar, its line)
        self.free: List[int] = list(range(1, max_tasks + 1))

    def update(self, views: Iterable[TaskView]) -> None:
        views = list(views)
        states = [v.state for v in views]
        self.batch.total = len(views)
        self.batch.n = sum(state in READY_STATES for state in states)
        self.batch.set_postfix_str(
            f"ok={states.count(SUCCESS)} aborted={states.count(ABORTED)} failed={states.count(FAILURE)}", refresh=False
        )
        self.batch.refresh()
        running = {v.id: v for v in views if v.state == STARTED}
        for task_id in [t for t in self.tasks if t not in running]:
            bar, line = self.tasks.pop(task_id)
            self.free.append(line)
            bar.close()
        for view in running.values():
            if view.id not in self.tasks:
                if not self.free:
                    continue
                line = self.free.pop(0)
                label = f"{view.name.rsplit('.', 1)[-1]} {view.id[:8]}"
                bar = tqdm(desc=label, total=None, file=self.file, position=line, leave=False, dynamic_ncols=True)
                self.tasks[view.id] = (bar, line)
            bar = self.tasks[view.id][0]
            done, total = view.progress if view.progress is not None else (0, None)
            bar.total, bar.n = total, done
            bar.refresh()

    def close(self) -> None:
        for bar, _ in self.tasks.values():
            bar.close()
        self.tasks.clear()
        self.batch.close()
