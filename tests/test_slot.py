"""One worker slot: a real worker process, and the parent's reads of what it sends (``Slot.messages``)."""

from __future__ import annotations

import multiprocessing
import pickle
import struct
import time

import pytest

from localabort._messages import Call, Calls, Ready, Reply, decode, encode
from localabort._slot import READ_SIZE, Slot, split_messages
from localabort._words import allocate
from localabort._worker import WorkerSetup

from . import tasks

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def slot(start_method, store_path):
    ctx = multiprocessing.get_context(start_method)
    slot = Slot(ctx, 0, allocate(ctx, 1), WorkerSetup(store_path))
    yield slot
    slot.ask_to_stop()
    slot.reap(timeout=10)


def read_until(slot, count):
    """Every message until ``count`` have come, in the lists ``messages`` gave them in."""
    reads, deadline = [], time.monotonic() + 30
    while sum(len(got) for got in reads) < count and time.monotonic() < deadline:
        got, ended = slot.messages()
        assert not ended
        if got:
            reads.append([decode(message) for message in got])
        time.sleep(0.01)
    return reads


def calls(slot, *jobs):
    """One message of calls, each ``(seq, task, args)``, to run in order."""
    batch = [Call(seq, slot.words.take(), False, f"t{seq}", "job", pickle.dumps((task, args, {})), False)
             for seq, task, args in jobs]  # fmt: skip
    slot.send(encode(Calls.batch(batch)))


def test_a_workers_replies_are_read_whole_and_in_order(slot):
    (ready,) = read_until(slot, 1)
    assert ready == [Ready()]
    calls(slot, *[(seq, tasks.add, (seq, 1)) for seq in range(1, 41)])
    replies = [reply for read in read_until(slot, 40) for reply in read]
    assert all(isinstance(reply, Reply) for reply in replies)
    assert [reply.seq for reply in replies] == list(range(1, 41))
    assert [pickle.loads(reply.blob) for reply in replies[:3]] == [2, 3, 4]


def test_a_reply_larger_than_a_read_comes_whole_after_a_short_one(slot):
    """Four reads and more for one message: its first bytes wait until the rest comes, nothing is cut or lost."""
    read_until(slot, 1)
    calls(slot, (1, tasks.add, (1, 1)), (2, tasks.big_bytes, (2,)), (3, tasks.add, (2, 1)))
    replies = [reply for read in read_until(slot, 3) for reply in read]
    assert [reply.seq for reply in replies] == [1, 2, 3]
    assert len(pickle.loads(replies[1].blob)) == 2 * 2**20 > 4 * READ_SIZE


def test_a_worker_that_exits_ends_its_pipe_after_its_last_messages(slot):
    read_until(slot, 1)
    calls(slot, (1, tasks.add, (1, 1)))
    slot.ask_to_stop()
    slot.process.join(30)
    got, ended = slot.messages()
    assert [decode(message).seq for message in got] == [1]
    if not ended:  # the read that took the reply may end before the pipe's end: the next one sees it
        assert slot.messages() == ([], True)


def framed(*messages):
    """``messages`` as ``multiprocessing`` sends them, the second one in the 2 GiB form (-1, then 8 bytes)."""
    out = b""
    for at, message in enumerate(messages):
        head = struct.pack("!i", len(message)) if at != 1 else struct.pack("!i", -1) + struct.pack("!Q", len(message))
        out += head + message
    return out


def test_messages_split_at_every_byte_come_whole_once_each():
    wire = framed(b"first", b"second, long form", b"", b"last")
    for cut in range(len(wire) + 1):
        unread = bytearray(wire[:cut])
        got = split_messages(unread)
        unread += wire[cut:]
        got += split_messages(unread)
        assert got == [b"first", b"second, long form", b"", b"last"], cut
        assert unread == bytearray()


def test_a_garbled_size_is_a_broken_pipe_not_a_hang():
    with pytest.raises(OSError, match="garbled"):
        split_messages(bytearray(struct.pack("!i", -4) + b"xxxx"))
