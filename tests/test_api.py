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
        "PENDING",
        "STARTED",
        "SUCCESS",
        "StoreError",
        "TaskAborted",
        "TimeLimitExceeded",
        "WorkerLost",
        "checkpoint",
        "current_task",
        "forget",
        "is_aborted",
    ]
    assert localabort.__all__ == sorted(localabort.__all__)
    for name in localabort.__all__:
        assert getattr(localabort, name) is not None


def test_states_are_spelled_as_in_celery():
    assert [localabort.PENDING, localabort.STARTED, localabort.SUCCESS, localabort.FAILURE, localabort.ABORTED] == [
        "PENDING", "STARTED", "SUCCESS", "FAILURE", "ABORTED",
    ]  # fmt: skip


def test_typed():
    import importlib.resources

    assert importlib.resources.files("localabort").joinpath("py.typed").is_file()
