"""How a prompt is cut into steps: the same cut, reused or cold, is what keeps reuse exact."""

from __future__ import annotations

import pytest

from localtable.backends.llamacpp.kvslots import MIN_STEP, ROW_GROUP, prompt_steps


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
