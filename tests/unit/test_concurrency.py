"""The adaptive limit: additive increase on healthy answers, multiplicative decrease on push-back or slowing."""

from __future__ import annotations

from shipper.core.concurrency import AdaptiveLimit


def test_it_starts_at_the_configured_concurrency() -> None:
    assert AdaptiveLimit(16).value == 16


def test_push_back_shrinks_it_multiplicatively_down_to_one() -> None:
    limit = AdaptiveLimit(16)
    limit.on_answer(0.01, pushed_back=True)
    assert limit.value == 14  # 16 * 0.9 = 14.4
    for _ in range(100):
        limit.on_answer(0.01, pushed_back=True)
    assert limit.value == 1


def test_healthy_answers_grow_it_back_about_one_per_window_and_never_past_the_maximum() -> None:
    limit = AdaptiveLimit(16)
    for _ in range(40):
        limit.on_answer(0.01, pushed_back=True)
    assert limit.value == 1
    for _ in range(3):  # windows of 1, 1 and 2 answers
        limit.on_answer(0.01, pushed_back=False)
    assert limit.value == 2
    for _ in range(1000):
        limit.on_answer(0.01, pushed_back=False)
    assert limit.value == 16


def test_an_answer_much_slower_than_usual_counts_as_strain_but_loopback_jitter_does_not() -> None:
    limit = AdaptiveLimit(10)
    for _ in range(50):
        limit.on_answer(0.002, pushed_back=False)
    limit.on_answer(0.02, pushed_back=False)  # 10x slower, but under the 50 ms floor: noise
    assert limit.value == 10
    limit.on_answer(0.2, pushed_back=False)  # 100x slower and past the floor: the remote is straining
    assert limit.value == 9
    for _ in range(500):  # the new normal: the average catches up and the limit grows back
        limit.on_answer(0.2, pushed_back=False)
    assert limit.value == 10
    limit.on_answer(0.6, pushed_back=False)
    assert limit.value == 9
