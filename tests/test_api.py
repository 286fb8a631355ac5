"""The public names are pinned: changing them is a deliberate act."""

import localabort


def test_all_is_pinned_and_sorted():
    assert localabort.__all__ == [
        "ABORTED",
        "AbortableAsyncResult",
        "AbortableFuture",
        "AbortableTask",
        "Executor",
        "FAILURE",
        "MaxRetriesExceededError",
        "MemoryLimitExceeded",
        "PENDING",
        "RECEIVED",
        "RETRY",
        "Retry",
        "STARTED",
        "SUCCESS",
        "SoftMemoryLimitExceeded",
        "SoftTimeLimitExceeded",
        "StoreError",
        "TaskAborted",
        "TimeLimitExceeded",
        "UnknownTask",
        "WorkerLost",
        "checkpoint",
        "current_task",
        "forget",
        "is_aborted",
    ]
    assert localabort.__all__ == sorted(localabort.__all__)
    for name in localabort.__all__:
        assert getattr(localabort, name) is not None


def test_every_public_class_and_function_prints_as_localabort_x():
    """Reprs, pickles and the API docs say ``localabort.Executor``, never the private module it lives in."""
    import pickle

    named = [getattr(localabort, name) for name in localabort.__all__ if not name.isupper()]
    assert len(named) == 18  # the seven states are strings
    assert [f"{value.__module__}.{value.__qualname__}" for value in named] == [
        f"localabort.{name}" for name in localabort.__all__ if not name.isupper()
    ]
    assert pickle.loads(pickle.dumps(localabort.AbortableTask)) is localabort.AbortableTask
    assert repr(localabort.Executor).startswith("<class 'localabort.Executor'")


def test_states_are_spelled_as_in_celery():
    assert [localabort.PENDING, localabort.STARTED, localabort.SUCCESS, localabort.FAILURE, localabort.ABORTED] == [
        "PENDING", "STARTED", "SUCCESS", "FAILURE", "ABORTED",
    ]  # fmt: skip


def test_typed():
    import importlib.resources

    assert importlib.resources.files("localabort").joinpath("py.typed").is_file()


def test_nothing_public_leaks_outside_all():
    """Every public attribute of the package is in __all__, or is one of its public modules."""
    import types

    leaked = {
        name
        for name, value in vars(localabort).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name not in localabort.__all__
    }
    assert leaked == set()


def test_public_exceptions_pickle_through_public_names_only():
    import pickle
    import pickletools

    errors = [
        localabort.TaskAborted("stopped", partial_result=[1], task_id="t1"),
        localabort.WorkerLost("gone"),
        localabort.TimeLimitExceeded("late"),
        localabort.StoreError("s.sqlite: broken"),
    ]
    for error in errors:
        assert type(error).__module__ == "localabort"
        blob = pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
        named = [arg for op, arg, _ in pickletools.genops(blob) if op.name == "SHORT_BINUNICODE"]
        assert not any(str(arg).startswith("localabort._") for arg in named), named
        copy = pickle.loads(blob)
        assert type(copy) is type(error) and copy.args == error.args and vars(copy) == vars(error)


def test_pickles_written_by_localabort_0_1_still_load():
    """Stores written before the exceptions were pickled by their public names keep their outcomes."""
    import pickle

    old_aborted = (
        b"\x80\x04\x95y\x00\x00\x00\x00\x00\x00\x00\x8c\x12localabort._errors\x94\x8c\x08_rebuild\x94\x93\x94h\x00"
        b"\x8c\x0bTaskAborted\x94\x93\x94\x8c\x0ftask t1 aborted\x94\x85\x94}\x94(\x8c\x0epartial_result\x94]\x94"
        b"(K\x01K\x02e\x8c\x07task_id\x94\x8c\x02t1\x94u\x87\x94R\x94."
    )
    old_lost = (
        b"\x80\x04\x950\x00\x00\x00\x00\x00\x00\x00\x8c\x12localabort._errors\x94\x8c\nWorkerLost\x94\x93\x94"
        b"\x8c\x04gone\x94\x85\x94R\x94."
    )
    aborted = pickle.loads(old_aborted)
    assert type(aborted) is localabort.TaskAborted
    assert (aborted.args, aborted.partial_result, aborted.task_id) == (("task t1 aborted",), [1, 2], "t1")
    assert type(pickle.loads(old_lost)) is localabort.WorkerLost


class GaveUp(localabort.TaskAborted):
    """A user's subclass whose __init__ takes other arguments than its args."""

    def __init__(self, reason, attempts):
        super().__init__(f"gave up: {reason}", partial_result=attempts)
        self.attempts = attempts


def test_a_subclass_of_task_aborted_pickles_whatever_its_init_takes():
    import pickle

    copy = pickle.loads(pickle.dumps(GaveUp("flaky", 3), pickle.HIGHEST_PROTOCOL))
    assert type(copy) is GaveUp and copy.args == ("gave up: flaky",)
    assert (copy.partial_result, copy.attempts) == (3, 3)


def test_importing_the_package_leaves_sqlalchemy_to_the_store():
    """Workers import the package; only an opened store needs SQLAlchemy (a slower start for every worker)."""
    import subprocess
    import sys

    code = "import sys, localabort, localabort._worker; print(sorted(m for m in sys.modules if 'sqlalchemy' in m))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
