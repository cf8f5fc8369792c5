"""Writers' turns on one spool are fair (spool/turns.py): the writer that gives the turn back and wants it again at
once must let a writer that was already waiting go first. Two Turns on one file contend as two processes would
(flock belongs to the open file, not the process)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from shipper.spool.turns import Turns


def gate_held(spool: Path) -> bool:
    fd = os.open(str(spool) + "-writer-next", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def test_a_writer_waiting_for_the_turn_goes_before_the_one_that_just_gave_it_back(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    busy, waiting = Turns(spool), Turns(spool)
    order: list[str] = []
    waiter_has_it, let_go = threading.Event(), threading.Event()

    def wait_for_turn() -> None:
        waiting.take()
        order.append("waiting")
        waiter_has_it.set()
        let_go.wait(5)
        waiting.give()

    def busy_again() -> None:
        busy.take()
        order.append("busy again")
        busy.give()

    busy.take()
    waiter = threading.Thread(target=wait_for_turn)
    waiter.start()
    wait_until(lambda: gate_held(spool))  # the waiter is next in line
    busy.give()
    again = threading.Thread(target=busy_again)  # and wants it back at once
    again.start()
    assert waiter_has_it.wait(5), "the writer that was waiting never got the turn"
    let_go.set()
    waiter.join(5)
    again.join(5)
    assert order == ["waiting", "busy again"]
    busy.close()
    waiting.close()
