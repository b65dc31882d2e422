"""How a prompt is cut into steps: the same cut, reused or cold, is what keeps reuse exact."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from localtable.backends.llamacpp.kvslots import MIN_STEP, ROW_GROUP, KVSlot, SlotPool, prompt_steps

WAIT = 30  # seconds: reached only when a test fails (a slot never freed)


def test_steps_are_long_enough_and_start_on_row_groups() -> None:
    assert prompt_steps(0, 600, 128) == [(0, 128), (128, 256), (256, 384), (384, 512), (512, 600)]
    # a 4-token last step would take another kernel path: it borrows from the one before
    assert prompt_steps(0, 260, 128) == [(0, 128), (128, 252), (252, 260)]
    assert prompt_steps(100, 108, 128) == [(100, 108)]
    assert prompt_steps(100, 104, 128) == []  # shorter than MIN_STEP: left to the last step
    for start in range(0, 40, ROW_GROUP):
        for end in range(start, 700, ROW_GROUP):
            steps = prompt_steps(start, end, 130)  # 130: steps of 128
            if end - start < MIN_STEP:
                assert steps == []
                continue
            assert steps[0][0] == start and steps[-1][1] == end
            assert all(a[1] == b[0] for a, b in zip(steps, steps[1:], strict=False))
            assert all(MIN_STEP <= hi - lo <= 128 and lo % ROW_GROUP == 0 for lo, hi in steps)


def test_unaligned_spans_are_refused() -> None:
    with pytest.raises(AssertionError):
        prompt_steps(2, 100, 128)


# -- generations at the same time (issue #17): a slot serves one at a time --------------


def fake_llm() -> Any:
    return SimpleNamespace()


def test_a_busy_slot_is_never_given_to_another_generation() -> None:
    pool = SlotPool(fake_llm(), max_slots=1)
    first = pool.acquire("A1", [1, 2, 3], reuse=True)
    assert pool._pick("B2", [1, 2, 3], reuse=True) is None  # must wait
    assert pool._pick("B2", [1, 2, 3], reuse=False) is None
    got: list[KVSlot] = []
    done = threading.Event()

    def second() -> None:
        got.append(pool.acquire("B2", [1, 2, 3], reuse=True))
        done.set()

    waiter = threading.Thread(target=second)
    waiter.start()
    pool.release(first)
    assert done.wait(WAIT)
    waiter.join(WAIT)
    assert got[0] is first and first.owner == "B2"


def test_each_conversation_in_flight_gets_its_own_slot() -> None:
    pool = SlotPool(fake_llm(), max_slots=2)
    pool.slots.append(KVSlot(fake_llm()))  # as share_weights would add it
    for conversation, tokens in (("A1", [5, 6, 7, 8]), ("C3", [1, 2])):
        slot = pool.acquire(conversation, tokens, reuse=True)
        slot.tokens = tokens
        pool.release(slot)
    a = pool.acquire("A1", [5, 6, 7, 8, 9], reuse=True)
    # every slot has an owner: B2 takes the free one sharing most of its prompt, not
    # A1's, which shares more but is in use
    b = pool.acquire("B2", [5, 6, 7, 8], reuse=True)
    assert a is pool.slots[0] and b is pool.slots[1] and b.owner == "B2"
    pool.release(b)
    pool.release(a)


def test_spare_slots_fill_the_pool_and_stop_where_llama_cpp_cannot(monkeypatch: Any) -> None:
    made: list[int] = []

    def share_weights(llm: Any) -> Any:
        if len(made) == 2:
            raise ValueError("Failed to create llama_context")  # as on too little memory
        made.append(1)
        return fake_llm()

    monkeypatch.setattr("localtable.backends.llamacpp.kvslots.share_weights", share_weights)
    pool = SlotPool(fake_llm(), max_slots=2)
    pool.add_spares()
    pool.add_spares()  # full: nothing more
    assert len(pool.slots) == 2 and len(made) == 1
    big = SlotPool(fake_llm(), max_slots=5)
    big.add_spares()  # the second context fails: the rest is left to the turns
    assert len(big.slots) == 2
    slot = big.acquire("A1", [1, 2], reuse=True)  # a spare is a fresh slot like any other
    assert slot is big.slots[0] and slot.owner == "A1"
