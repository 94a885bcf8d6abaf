"""The machine probe's share of a run (issue 19: LiteMedSAM's harness share): re-measured every
``interval_s``, but never more often than its own duration over ``PROBE_SHARE`` allows."""

from __future__ import annotations

import pytest

from segbench.measuring import cost


def test_a_slow_probe_waits_longer(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(cost.time, "monotonic", lambda: clock[0])
    probe = cost.MachineProbe("cpu", interval_s=10.0)
    taken: list[float] = []

    def measure(duration: float) -> float:
        taken.append(clock[0])
        clock[0] += duration
        return 1000 * duration

    monkeypatch.setattr(probe, "_measure", lambda: measure(0.05))  # fast: the interval decides
    probe.ms()
    clock[0] += 9.0
    probe.ms()
    clock[0] += 2.0
    assert probe.ms() == 50.0 and len(taken) == 2  # 11.05 s after the first
    monkeypatch.setattr(probe, "_measure", lambda: measure(0.5))  # slow: 0.5 s / 1% = 50 s
    clock[0] += 11.0
    probe.ms()
    clock[0] += 40.0
    probe.ms()
    assert len(taken) == 3
    clock[0] += 11.0
    assert probe.ms() == 500.0 and len(taken) == 4
