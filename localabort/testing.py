"""Test abort logic in this process: no children, no files, no broker.

``run_inline`` runs a task the way a worker does, through the same outcome
rules (the table in docs/states.md), and can pretend an abort arrives at the N-th
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

Three assertions cover what an abortable task owes its users; each fails
with a message that names the task, and hides its own frames so pytest
points at your line::

    >>> assert_checks_every(1, Crunch, 100).state      # a check per unit of progress
    'SUCCESS'
    >>> assert_stops_within(0, Crunch, 100, abort_after=7).state
    'ABORTED'
    >>> assert_aborts_cleanly(Crunch, 20)              # wherever the abort lands

Retries run here too, one attempt after the other, without waiting: the
delays the executor would have waited are on the outcome::

    >>> class Flaky(AbortableTask):
    ...     autoretry_for = (ConnectionError,)
    ...     retry_backoff = 2
    ...     retry_jitter = False
    ...     def run(self):
    ...         if self.request.retries < 2:
    ...             raise ConnectionError("reset")
    ...         return "fetched"
    >>> outcome = run_inline(Flaky)
    >>> outcome.result, outcome.retries, outcome.delays
    ('fetched', 2, (2.0, 4.0))
    >>> assert_stops_retrying_once_aborted(Flaky).state
    'ABORTED'
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ._states import ABORTED, RETRY, SUCCESS, Progress
from ._task import Binding, run, task_name

__all__ = [
    "Outcome",
    "assert_aborts_cleanly",
    "assert_checks_every",
    "assert_stops_retrying_once_aborted",
    "assert_stops_within",
    "run_inline",
]


@dataclass(frozen=True)
class Outcome:
    """How an inline run ended.

    Attributes:
        state: ``SUCCESS``, ``FAILURE`` or ``ABORTED``.
        result: what ``run`` returned (for an honoured abort, the partial result).
        exception: what ``result()`` would raise, or ``None``.
        checks: how many times the task called ``is_aborted()``/``checkpoint()``
            (over all its attempts, with the check that ends each retried one).
        progress: the last ``(done, total)`` the task reported, or ``None``.
        retries: how many attempts were retried before the last one.
        delays: the seconds an executor would have waited before each retry.
    """

    state: str
    result: Any
    exception: Optional[BaseException]
    checks: int
    progress: Optional[Progress]
    retries: int = 0
    delays: Tuple[float, ...] = ()


def run_inline(task: Any, *args: Any, abort_after: Optional[int] = None, **kwargs: Any) -> Outcome:
    """Run ``task`` (an ``AbortableTask`` subclass or a callable) here and now.

    Args:
        abort_after: make the N-th ``is_aborted()`` check (1-based) and every
            later one see an abort; ``None``: no abort.

    >>> run_inline(divmod, 7, 2).result
    (3, 1)
    """
    return _run(task, args, kwargs, abort_after, None)


def _run(
    task: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any], abort_after: Optional[int],
    events: Optional[List[Tuple[str, float]]],
) -> Outcome:  # fmt: skip
    if abort_after is not None and abort_after < 1:
        raise ValueError(f"abort_after counts checks from 1, not {abort_after}")
    checks = 0

    def probe() -> bool:
        nonlocal checks
        checks += 1
        if events is not None:
            events.append(("check", checks))
        return abort_after is not None and checks >= abort_after

    def report(done: float, total: Optional[float]) -> None:
        if events is not None:
            events.append(("progress", done))

    task_id = f"inline-{uuid.uuid4()}"
    delays: List[float] = []
    while True:  # one attempt after the other, as an executor runs them, without the waits
        binding = Binding(task_id, probe, report, retries=len(delays), report_every=0.0)
        (state, value, exc, _, countdown), progress = run(task, args, kwargs, binding)
        if state != RETRY:
            break
        if events is not None:
            events.append(("retry", len(delays)))
        delays.append(countdown or 0.0)
    return Outcome(state, value, exc, checks, progress, len(delays), tuple(delays))


def _ended(outcome: Outcome) -> str:
    return outcome.state + (f" ({type(outcome.exception).__name__}: {outcome.exception})" if outcome.exception else "")


def assert_checks_every(units: float, task: Any, *args: Any, **kwargs: Any) -> Outcome:
    """Assert that ``task`` checks for an abort at least every ``units`` of its progress.

    Runs the task inline without an abort, watching the order of its
    ``is_aborted()`` checks and ``progress()`` reports; returns the outcome.

    >>> from localabort import AbortableTask
    >>> class Lazy(AbortableTask):
    ...     def run(self, n):
    ...         for i in range(n):
    ...             self.progress(i + 1, n)
    >>> assert_checks_every(10, Lazy, 50)
    Traceback (most recent call last):
    ...
    AssertionError: Lazy ran from progress 0 to 11 without checking is_aborted(); it should check at least every 10
    """
    __tracebackhide__ = True
    name = task_name(task, short=True)
    events: List[Tuple[str, float]] = []
    outcome = _run(task, args, kwargs, None, events)
    if outcome.state != SUCCESS:
        raise AssertionError(f"{name} ended {_ended(outcome)} when run without an abort")
    if not any(kind == "progress" for kind, _ in events):
        raise AssertionError(f"{name} reported no progress(), so its checks cannot be measured against it")
    checked_at = current = 0.0
    for kind, value in events:
        if kind == "check":
            checked_at = current
        else:
            current = value
            if current - checked_at > units:
                raise AssertionError(
                    f"{name} ran from progress {checked_at:g} to {current:g} without checking "
                    f"is_aborted(); it should check at least every {units:g}"
                )
    return outcome


def assert_stops_within(checks: int, task: Any, *args: Any, abort_after: int = 1, **kwargs: Any) -> Outcome:
    """Assert that ``task``, aborted at its ``abort_after``-th check, ends ABORTED within ``checks`` more checks.

    ``checks=0`` means it stops at the very check that saw the abort.
    Returns the outcome for further assertions (on ``result``, say).

    >>> from localabort import AbortableTask
    >>> class Stubborn(AbortableTask):
    ...     def run(self):
    ...         while sum(self.is_aborted() for _ in range(5)) < 5:
    ...             pass
    >>> assert_stops_within(2, Stubborn)
    Traceback (most recent call last):
    ...
    AssertionError: Stubborn checked is_aborted() 4 more times after the abort at check 1; expected at most 2
    """
    __tracebackhide__ = True
    name = task_name(task, short=True)
    outcome = _run(task, args, kwargs, abort_after, None)
    if outcome.checks < abort_after:
        raise AssertionError(
            f"{name} ended after {outcome.checks} checks, before the abort at check {abort_after}; "
            "pass a smaller abort_after"
        )
    if outcome.state != ABORTED:
        raise AssertionError(f"{name} ended {_ended(outcome)}, not ABORTED, after the abort at check {abort_after}")
    extra = outcome.checks - abort_after
    if extra > checks:
        raise AssertionError(
            f"{name} checked is_aborted() {extra} more times after the abort at check {abort_after}; "
            f"expected at most {checks}"
        )
    return outcome


def assert_aborts_cleanly(task: Any, *args: Any, max_points: int = 200, **kwargs: Any) -> None:
    """Assert that ``task`` ends ABORTED wherever an abort lands.

    Runs it once without an abort to count its checks, then once with the
    abort at each check (at most ``max_points`` of them, spread evenly,
    first and last included). A task that crashes or succeeds when stopped
    at some point fails, naming that point.

    >>> from localabort import AbortableTask
    >>> class Fragile(AbortableTask):
    ...     def run(self, n):
    ...         for i in range(n):
    ...             if self.is_aborted():
    ...                 return 1 / (i - 3)   # a bug on one path only
    >>> assert_aborts_cleanly(Fragile, 10)
    Traceback (most recent call last):
    ...
    AssertionError: with an abort at check 4 of 10, Fragile ended FAILURE (ZeroDivisionError: division by zero)
    """
    __tracebackhide__ = True
    name = task_name(task, short=True)
    clean = _run(task, args, kwargs, None, None)
    if clean.state != SUCCESS:
        raise AssertionError(f"{name} ended {_ended(clean)} when run without an abort")
    total = clean.checks
    if total == 0:
        raise AssertionError(f"{name} never checked is_aborted(), so nothing can abort it")
    step = max(1.0, (total - 1) / max(1, max_points - 1))
    points = sorted({min(total, 1 + round(i * step)) for i in range(min(total, max_points))} | {total})
    for point in points:
        outcome = _run(task, args, kwargs, point, None)
        if outcome.state != ABORTED:
            raise AssertionError(f"with an abort at check {point} of {total}, {name} ended {_ended(outcome)}")


def assert_stops_retrying_once_aborted(task: Any, *args: Any, abort_after: int = 1, **kwargs: Any) -> Outcome:
    """Assert that ``task``, aborted at its ``abort_after``-th check, ends ABORTED and starts no other attempt.

    The check that ends a retried attempt counts: a task that raises
    before it ever checks is aborted as that attempt ends. Returns the
    outcome.

    >>> from localabort import AbortableTask
    >>> class Sloppy(AbortableTask):
    ...     autoretry_for = (ConnectionError,)
    ...     def run(self):
    ...         if self.is_aborted():
    ...             raise RuntimeError("stopped")  # a bug: an abort is not an error
    ...         raise ConnectionError("reset")
    >>> assert_stops_retrying_once_aborted(Sloppy)
    Traceback (most recent call last):
    ...
    AssertionError: Sloppy, aborted at check 1, ended FAILURE (RuntimeError: stopped) after 0 more attempt(s); ...
    """
    __tracebackhide__ = True
    name = task_name(task, short=True)
    events: List[Tuple[str, float]] = []
    outcome = _run(task, args, kwargs, abort_after, events)
    if outcome.checks < abort_after:
        raise AssertionError(
            f"{name} ended after {outcome.checks} checks, before the abort at check {abort_after}; "
            "pass a smaller abort_after"
        )
    seen = next(i for i, (kind, value) in enumerate(events) if kind == "check" and value == abort_after)
    later = sum(kind == "retry" for kind, _ in events[seen:])
    if outcome.state != ABORTED or later:
        raise AssertionError(
            f"{name}, aborted at check {abort_after}, ended {_ended(outcome)} after {later} more attempt(s); "
            "an aborted task must end ABORTED and never be retried"
        )
    return outcome
