"""When to ask for a task's status next (GPUGeek has no push: completion is found by polling call 5).

The aim (DESIGN.md): notice a finished task within ~100 ms while asking no more than about once a
second over a long task. What the platform tells is used: while queued, the position; while running,
the run time it reports (``run_duration``), compared with the median run time of earlier runs of the same
cloud part (or the same shape: other seeds and texts) from the journal. With that expectation the schedule
halves the distance to the expected end (few polls far from it) and polls densely in a narrow window
around it; without one each wait is a fixed fraction of the time run so far (dense, then thinning out).
"""
from __future__ import annotations

from .wire import QUEUED, RUNNING, TaskDetail

# Densest polling, used in the window around the expected end: the median lag is about half of it.
MIN_DELAY_S = 0.025
# Sparsest polling while running, far from the expected end: a task that ends unexpectedly early is
# noticed within this.
MAX_RUNNING_DELAY_S = 5.0
# Share of the poll budget (one request per second of task time) spent in the window around the end.
WINDOW_BUDGET = 0.75
# Tasks shorter than this get the window budget of a task this long (a handful of extra requests).
SHORT_TASK_S = 10.0
# Without an expectation (a part never run before): each wait is this fraction of the time the task has
# run, between the floor and the cap: a 3 s task is noticed within ~120 ms (~60 ms on average), and a
# 10-minute task costs ~0.8 polls a second (bench/poll.py prints both).
BLIND_FRACTION = 0.04
BLIND_FLOOR_S = 0.05
BLIND_CAP_S = 1.5
# Later than expected (with history): back off gently towards this.
OVERDUE_CAP_S = 1.1
# While queued: the start of the run is not urgent (the run time is measured by the platform anyway).
QUEUED_DELAY_S = 1.0
QUEUED_FAR_DELAY_S = 2.0
# How often the interruption flag is checked while waiting between polls (the bar is 200 ms).
INTERRUPT_CHECK_S = 0.05
# When earlier runs do not say how much they vary, assume this share of the expected run time.
DEFAULT_SPREAD = 0.03


class PollSchedule:
    """``expected_run_s``: median run time of earlier runs of the same cloud part; ``spread_s``: how much
    they vary (standard deviation). The window around the expected end is two spreads wide each side,
    and polled as densely as the budget allows."""

    def __init__(self, expected_run_s: float | None = None, spread_s: float | None = None):
        self.expected = expected_run_s if expected_run_s and expected_run_s > 0 else None
        if self.expected:
            spread = spread_s if spread_s is not None and spread_s > 0 else self.expected * DEFAULT_SPREAD
            self.window = min(self.expected / 2, max(0.15, 2 * spread))
            # a short task's few polls cost little: budget as if it lasted at least SHORT_TASK_S
            budget = WINDOW_BUDGET * max(self.expected, SHORT_TASK_S)
            self.dense = min(OVERDUE_CAP_S, max(MIN_DELAY_S, 2 * self.window / budget))
        self._overdue = 0

    def next_delay(self, d: TaskDetail) -> float:
        if d.status == QUEUED:
            return QUEUED_DELAY_S if d.current_position <= 2 else QUEUED_FAR_DELAY_S
        if d.status != RUNNING:
            return MIN_DELAY_S
        ran = max(0.0, d.run_duration_ms / 1000.0)
        if self.expected is None:
            return min(BLIND_CAP_S, max(BLIND_FLOOR_S, BLIND_FRACTION * ran))
        to_window = (self.expected - self.window) - ran
        if to_window > 0:
            # far from the end: halve the distance to the window, within bounds
            return max(min(to_window, MIN_DELAY_S * 2), min(MAX_RUNNING_DELAY_S, to_window / 2 + 0.01, to_window))
        if ran < self.expected + self.window:
            return self.dense
        # later than expected: back off gently towards one poll a second
        self._overdue += 1
        return min(OVERDUE_CAP_S, self.dense * (1.3 ** self._overdue))
