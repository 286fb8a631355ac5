"""The abort words: a worker accepting a job sent ahead and the parent recalling it race; exactly one wins."""

from __future__ import annotations

import multiprocessing

import pytest

from localabort._words import DEPTH, AbortWords, allocate


@pytest.fixture
def words():
    ctx = multiprocessing.get_context("spawn")
    words = AbortWords(allocate(ctx, 2), 1, ctx.Lock())
    yield words
    words.release()  # its named semaphore goes now, as a slot's does when its worker is reaped


def test_a_slot_takes_its_own_words_in_turn(words):
    taken = [words.take() for _ in range(2 * DEPTH)]
    assert set(taken) == {1 * DEPTH + turn for turn in range(DEPTH)}  # slot 1's words only
    assert taken[:DEPTH] == taken[DEPTH:]  # in turn: DEPTH jobs held at once never share a word


def test_an_abort_is_for_one_job_only(words):
    word = words.take()
    words.abort(word, seq=5)
    assert words.is_set(word, 5) and words.probe(word, 5)()
    assert not words.is_set(word, 6) and not words.probe(word, 6)()  # the next job on that word


def test_a_recall_before_the_worker_accepts_wins(words):
    word = words.take()
    assert words.recall(word, seq=3) is True  # never started
    assert words.accept(word, seq=3) is False  # so the worker skips it
    assert words.is_set(word, 3)


def test_a_worker_accepting_before_the_recall_wins(words):
    word = words.take()
    assert words.accept(word, seq=3) is True
    assert not words.is_set(word, 3)
    assert words.recall(word, seq=3) is False  # it runs; the abort reaches it at its next check
    assert words.is_set(word, 3)


def _accept_in_child(words, word, seq, results):
    results.put((words.accept(word, seq), words.probe(word, seq)()))


@pytest.mark.parametrize("recall_first", [True, False])
def test_accept_and_recall_across_processes(words, recall_first):
    """The words and the lock reach a spawned worker, and the two sides see one outcome."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    word, seq = words.take(), 11
    if recall_first:
        assert words.recall(word, seq) is True
    child = ctx.Process(target=_accept_in_child, args=(words, word, seq, results))
    child.start()
    accepted, aborted = results.get(timeout=60)
    child.join(60)
    assert (accepted, aborted) == (not recall_first, recall_first)
    if not recall_first:
        assert words.recall(word, seq) is False and words.is_set(word, seq)


def test_a_recall_does_not_wait_for_ever_on_a_lock_a_dead_worker_held(words, monkeypatch):
    import localabort._words

    monkeypatch.setattr(localabort._words, "HANDOVER_WAIT", 0.01)
    word = words.take()
    words._lock.acquire()  # as if its worker died accepting
    assert words.recall(word, seq=4) is False  # taken as started: it ends with its slot
    assert words.is_set(word, 4)  # and if it does run, it stops at its first check
