"""When to ask for a task's status next (GPUGeek has no push: completion is found by polling call 5).

The aim (DESIGN.md, issue 26): notice a finished task at once, every time, while asking no more than about
once a second over a long task. What the platform tells is used: while queued, the position; while running,
the run time it reports (``run_duration``), compared with the median run time of earlier runs of the same
cloud part (or the same shape: other seeds and texts) from the journal.

With that expectation, the wait before the next poll grows with the distance between the run time so far and
the expected end, on both sides of it: polls are densest in a flat zone around the expected end (its width
from how much earlier runs varied, robustly, so one slow first run does not thin them out), and thin out in
proportion to how far the end is from there. A run a little shorter or longer than the last is still noticed
within tens of milliseconds; the lag of a run far off the expectation is a small fraction of how far off it
was. Without an expectation each wait is a fixed fraction of the time the task has run so far.
"""
from __future__ import annotations

from .wire import QUEUED, RUNNING, TaskDetail

# Densest polling, in the flat zone around the expected end: the median lag is about half of it.
MIN_DELAY_S = 0.025
# Sparsest polling while running, far from the expected end.
MAX_RUNNING_DELAY_S = 5.0
# Share of the poll budget (one request per second of task time) spent in the flat zone around the end.
WINDOW_BUDGET = 0.75
# Tasks shorter than this get the flat-zone budget of a task this long (a handful of extra requests).
SHORT_TASK_S = 10.0
# Half-width of the flat zone: twice the spread of earlier runs, at least this, at most a share of the run.
FLAT_MIN_S = 0.15
FLAT_MAX_SHARE = 0.25
# Before the flat zone, the wait is this share of the distance to it (a run that ends early by d seconds is
# noticed within about this share of d).
APPROACH_SHARE = 0.25
# After the flat zone (the run is later than any recent run), the wait grows by this share of the lateness,
# up to OVERDUE_CAP_S (about one poll a second on a task far later than expected).
OVERDUE_SHARE = 0.1
OVERDUE_CAP_S = 1.1
# Without an expectation (a part never run before): each wait is this fraction of the time the task has
# run, between the floor and the cap: a 3 s task is noticed within ~90 ms (~45 ms on average), and a
# 10-minute task costs ~0.8 polls a second (bench/poll.py prints both).
BLIND_FRACTION = 0.03
BLIND_FLOOR_S = 0.05
BLIND_CAP_S = 1.5
# While queued: the start of the run is not urgent (the run time is measured by the platform anyway), but a
# task expected to run briefly is asked again before its flat zone could begin.
QUEUED_DELAY_S = 1.0
QUEUED_FAR_DELAY_S = 2.0
# How often the interruption flag is checked while waiting between polls (the bar is 200 ms).
INTERRUPT_CHECK_S = 0.05
# When earlier runs do not say how much they vary, assume this share of the expected run time.
DEFAULT_SPREAD = 0.03


class PollSchedule:
    """``expected_run_s``: median run time of earlier runs of the same cloud part; ``spread_s``: how much
    they vary (a robust standard deviation). Stateless between calls: the delay is a function of the status
    alone, so a fan-out's runs and a first run get the same schedule."""

    def __init__(self, expected_run_s: float | None = None, spread_s: float | None = None):
        self.expected = expected_run_s if expected_run_s and expected_run_s > 0 else None
        if self.expected:
            spread = spread_s if spread_s is not None and spread_s > 0 else self.expected * DEFAULT_SPREAD
            self.flat = min(self.expected * FLAT_MAX_SHARE, max(FLAT_MIN_S, 2 * spread))
            # a short task's few polls cost little: budget as if it lasted at least SHORT_TASK_S
            budget = WINDOW_BUDGET * max(self.expected, SHORT_TASK_S)
            self.dense = min(OVERDUE_CAP_S, max(MIN_DELAY_S, 2 * self.flat / budget))

    def next_delay(self, d: TaskDetail) -> float:
        if d.status == QUEUED:
            wait = QUEUED_DELAY_S if d.current_position <= 2 else QUEUED_FAR_DELAY_S
            if self.expected is not None:   # it may start right after this poll: back before its flat zone
                wait = min(wait, max(self.dense, self.expected - self.flat))
            return wait
        if d.status != RUNNING:
            return MIN_DELAY_S
        ran = max(0.0, d.run_duration_ms / 1000.0)
        if self.expected is None:
            return min(BLIND_CAP_S, max(BLIND_FLOOR_S, BLIND_FRACTION * ran))
        early = (self.expected - self.flat) - ran
        if early > 0:   # before the flat zone: a share of the distance to it, never past its start
            return min(MAX_RUNNING_DELAY_S, max(self.dense, min(early, self.dense + APPROACH_SHARE * early)))
        late = ran - (self.expected + self.flat)
        if late <= 0:
            return self.dense
        return min(OVERDUE_CAP_S, self.dense + OVERDUE_SHARE * late)
