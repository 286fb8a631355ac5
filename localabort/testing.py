"""Test abort logic in this process: no children, no files, no broker.

``run_inline`` runs a task the way a worker does, through the same outcome
rules (SPEC section 6), and can pretend an abort arrives at the N-th
check::

    >>> from localabort import AbortableTask
    >>> class Crunch(AbortableTask):
    ...     def run(self, n):
    ...         done = []
    ...         for i in range(n):
    ...             if self.is_aborted():
    ...                 return done
    ...             done.append(i * i)
    ...             self.progress(i + 1, n)
    ...         return done
    >>> outcome = run_inline(Crunch, 10, abort_after=4)
    >>> outcome.state, outcome.result, outcome.checks, outcome.progress
    ('ABORTED', [0, 1, 4], 4, (3, 10))
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from ._task import AbortableTask, execute

__all__ = ["Outcome", "run_inline"]


@dataclass(frozen=True)
class Outcome:
    """How an inline run ended.

    Attributes:
        state: ``SUCCESS``, ``FAILURE`` or ``ABORTED``.
        result: what ``run`` returned (for an honoured abort, the partial result).
        exception: what ``result()`` would raise, or ``None``.
        checks: how many times the task called ``is_aborted()``/``checkpoint()``.
        progress: the last ``(done, total)`` the task reported, or ``None``.
    """

    state: str
    result: Any
    exception: Optional[BaseException]
    checks: int
    progress: Optional[Tuple[float, Optional[float]]]


def run_inline(task: Any, *args: Any, abort_after: Optional[int] = None, **kwargs: Any) -> Outcome:
    """Run ``task`` (an ``AbortableTask`` subclass or a callable) here and now.

    Args:
        abort_after: make the N-th ``is_aborted()`` check (1-based) and every
            later one see an abort; ``None``: no abort.

    >>> run_inline(divmod, 7, 2).result
    (3, 1)
    """
    if abort_after is not None and abort_after < 1:
        raise ValueError(f"abort_after counts checks from 1, not {abort_after}")
    checks = 0

    def probe() -> bool:
        nonlocal checks
        checks += 1
        return abort_after is not None and checks >= abort_after

    target: Any = task
    if isinstance(task, type) and issubclass(task, AbortableTask):
        target = task()
        target._bind(f"inline-{uuid.uuid4()}", probe, args=args, kwargs=kwargs)
    state, value, exc, _ = execute(target, args, kwargs)
    progress = target._last_progress if isinstance(target, AbortableTask) else None
    return Outcome(state, value, exc, checks, progress)
