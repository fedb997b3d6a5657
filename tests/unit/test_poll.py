"""Dead devices are probed less often, and polled every cycle again once they answer."""

from __future__ import annotations

from gauged.field.poll import ProbeSchedule


def run(schedule: ProbeSchedule, cycles: int, answers: bool) -> list[bool]:
    polled = []
    for _ in range(cycles):
        due = schedule.due()
        polled.append(due)
        if due:
            schedule.answered() if answers else schedule.failed()
    return polled


def test_a_dead_device_is_probed_every_2_then_4_then_8_cycles() -> None:
    s = ProbeSchedule(after=2, max_every=8)
    polled = run(s, 40, answers=False)
    reads = [i for i, p in enumerate(polled) if p]
    assert reads[:6] == [0, 1, 3, 7, 15, 23]  # 2 misses, then gaps of 2, 4, 8, 8
    assert s.down


def test_an_answer_brings_it_back_to_every_cycle() -> None:
    s = ProbeSchedule()
    run(s, 10, answers=False)
    while not s.due():
        pass
    s.answered()
    assert run(s, 5, answers=True) == [True] * 5
    assert not s.down
