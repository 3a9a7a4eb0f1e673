"""When to ask for a task's status next (GPUGeek has no push: completion is found by polling call 5).

The aim (DESIGN.md, issues 26 and 33): notice a finished task within 100 ms every time its run is within
+-30% of what earlier runs took, while asking no more than about once a second over a long task. A task's
length moves from run to run on a real platform (the cloud's pickup, the graph's own time), and a history
learned from equal runs says less about that than its spread suggests, so the schedule never trusts it to
be narrower than +-30%.

With an expectation (the median run time of earlier runs of the same cloud part, or of its shape, from the
journal), the run time is divided into three parts:
- before the plausible window (the expected run minus at least 30%, or three spreads of earlier runs): each
  wait is a share of the distance to the window and never steps past its start, so a run that ends much
  earlier still costs only a share of how much earlier it was;
- in the window: the gap between two polls grows linearly from CENTRE_GAP_S at the expected end (half the
  median lag of typical runs) to LAG_S at its edges (the worst lag anywhere inside it). What this costs is
  counted once, up front: a short task may spend WINDOW_CALLS_MIN calls there, a long one WINDOW_RATE a
  second of its expected run; where the window would cost more, both gaps widen by the same factor (a
  10-minute task is noticed within ~1.1 s, its whole cost under one call a second);
- after the window: the run is later than any plausible one, and the wait grows with the lateness.
Without an expectation (a part never run before) each wait is a fixed fraction of the time the task has run.

The run time comes from what the platform reports (``run_duration``) and, between polls, from this
process's own clock: a status reported at one moment says the run is at least that old plus the time
since, so a platform that updates its run time coarsely or late does not shift the window; one whose figure
does not move at all while the task runs leaves the run's start known only to between two polls, and the
schedule polls as densely as the densest place the run may be. The gap is the
time between two observations on the platform; the status call's own round trip (measured between polls)
is taken off the sleep, so a slow link does not widen it.
"""
from __future__ import annotations

import math
import statistics
import time
from collections import deque
from typing import Callable

from .wire import RUNNING, TaskDetail

# The widest gap between two polls over the plausible window: the end is noticed within about this.
LAG_S = 0.09
# The gap at the expected end, where most runs end (their median lag is about half of it).
CENTRE_GAP_S = 0.045
# The plausible window around the expected end: at least this share of the expected run on each side, or
# this many spreads of earlier runs, or this long, whichever is widest.
WINDOW_SHARE = 0.30
WINDOW_SPREADS = 3.0
WINDOW_MIN_S = 0.2
# The centre of the window, polled at CENTRE_GAP_S (the gap then grows to LAG_S at the window's edges).
CORE_SHARE = 0.05
CORE_SPREADS = 2.0
CORE_MIN_S = 0.1
# What the window may cost: this many status calls for a short task, this many per second of the expected
# run for a long one. A 3 s task's +-30% at the gaps above costs ~30 calls; a 10-minute task's would cost
# ~6,000, so there both gaps widen until it costs 480.
WINDOW_CALLS_MIN = 60
WINDOW_RATE = 0.8
# Before the window: the wait is this share of the distance to it, at most MAX_RUNNING_DELAY_S.
APPROACH_SHARE = 0.25
MAX_RUNNING_DELAY_S = 5.0
# After the window (later than any plausible run): the gap grows by this share of the lateness, up to
# OVERDUE_CAP_S (about one poll a second on a task far later than expected).
OVERDUE_SHARE = 0.1
OVERDUE_CAP_S = 1.1
# Without an expectation (a part never run before): each wait is this fraction of the time the task has
# run, between the floor and the cap: a task of up to 8 s is noticed within 250 ms (a 3 s one within ~90
# ms), and a 10-minute task costs ~0.85 polls a second (bench/poll.py prints both).
BLIND_FRACTION = 0.03
BLIND_FLOOR_S = 0.05
BLIND_CAP_S = 1.5
# While queued: with an expectation, the next poll comes before the earliest plausible end of a run that
# starts right after this one. Without one, the task may be short: the wait is a fraction of the time it
# has queued (from BLIND_FLOOR_S). At most QUEUED_DELAY_S near the head of the queue, QUEUED_FAR_DELAY_S
# further back.
QUEUED_FRACTION = 0.1
QUEUED_DELAY_S = 1.0
QUEUED_FAR_DELAY_S = 2.0
# The shortest sleep between two polls (a round trip longer than the gap leaves this).
MIN_SLEEP_S = 0.005
# Round trips remembered to estimate the next one (their median: one slow retry does not count).
ROUND_TRIPS = 5
# How often the interruption flag is checked while waiting between polls (the bar is 200 ms).
INTERRUPT_CHECK_S = 0.05


class Window:
    """Where an expected run's end plausibly falls, and the gap between polls at each run time there."""

    def __init__(self, expected_s: float, spread_s: float | None):
        spread = spread_s if spread_s and spread_s > 0 else 0.0
        self.expected = expected_s
        self.half = max(WINDOW_SHARE * expected_s, WINDOW_SPREADS * spread, WINDOW_MIN_S)
        self.core = min(self.half, max(CORE_SHARE * expected_s, CORE_SPREADS * spread, CORE_MIN_S))
        budget = max(WINDOW_CALLS_MIN, WINDOW_RATE * expected_s)
        scale = max(1.0, window_calls(self.core, self.half, CENTRE_GAP_S, LAG_S) / budget)
        self.centre_gap, self.edge_gap = CENTRE_GAP_S * scale, LAG_S * scale

    @property
    def start(self) -> float:
        return self.expected - self.half

    @property
    def end(self) -> float:
        return self.expected + self.half

    def gap(self, ran: float) -> float:
        """The gap to the next poll at run time ``ran`` (seconds)."""
        early = self.start - ran
        if early > 0:   # a share of the distance to the window, never past its start
            return min(MAX_RUNNING_DELAY_S, max(self.edge_gap, min(early, self.edge_gap + APPROACH_SHARE * early)))
        late = ran - self.end
        if late > 0:
            return min(max(OVERDUE_CAP_S, self.edge_gap), self.edge_gap + OVERDUE_SHARE * late)
        off = abs(ran - self.expected) - self.core
        if off <= 0:
            return self.centre_gap
        return self.centre_gap + (self.edge_gap - self.centre_gap) * off / (self.half - self.core)


def window_calls(core: float, half: float, centre_gap: float, edge_gap: float) -> float:
    """Polls over a whole window: flat at ``centre_gap`` over +-``core``, then the gap growing linearly to
    ``edge_gap`` at +-``half`` (the integral of 1/gap over the run time)."""
    ramp = half - core
    if ramp <= 0 or edge_gap <= centre_gap:
        return 2 * core / centre_gap + 2 * ramp / edge_gap
    return 2 * core / centre_gap + 2 * ramp / (edge_gap - centre_gap) * math.log(edge_gap / centre_gap)


class PollSchedule:
    """``expected_run_s``: median run time of earlier runs of the same cloud part; ``spread_s``: how much
    they vary (a robust standard deviation). One schedule follows one task: it remembers what the platform
    said and when (``clock``: this process's monotonic clock; a virtual one in tests)."""

    def __init__(self, expected_run_s: float | None = None, spread_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.expected = expected_run_s if expected_run_s and expected_run_s > 0 else None
        self.window = Window(self.expected, spread_s) if self.expected else None
        self.clock = clock
        self._run_seen: tuple | None = None    # (when, the run time it was at least, the platform's figure)
        self._unsure = 0.0                     # how much longer than that it may have run
        self._queued_since: float | None = None
        self._queued_at: float | None = None
        self._asked: tuple[float, float] | None = None       # (when the last delay was given, the delay)
        self._trips: deque = deque(maxlen=ROUND_TRIPS)

    def next_delay(self, d: TaskDetail) -> float:
        """How long to sleep before asking again, given the status just read."""
        now = self.clock()
        if self._asked is not None:
            self._trips.append(max(0.0, now - self._asked[0] - self._asked[1]))
        gap = self.gap(d, now)
        delay = max(MIN_SLEEP_S, gap - (statistics.median(self._trips) if self._trips else 0.0))
        self._asked = (now, delay)
        return delay

    def gap(self, d: TaskDetail, now: float) -> float:
        """The time from this observation of the task to the next one."""
        if d.status != RUNNING:   # queued (or a status this client does not know: as if queued)
            return self._queued_gap(d, now)
        least, most = self.run_time(d, now)
        if self.window is not None:   # the shortest gap anywhere the run may be
            return self.window.gap(min(max(self.expected, least), most))
        return min(BLIND_CAP_S, max(BLIND_FLOOR_S, BLIND_FRACTION * least))

    def run_time(self, d: TaskDetail, now: float) -> tuple[float, float]:
        """How long the task has run, at least and at most: what the platform says, or what it said before
        plus the time since. Until its figure is seen to move, the run may have started as early as just
        after the last answer that said queued (a platform that reports no run time while it runs)."""
        reported = max(0.0, d.run_duration_ms / 1000.0)
        least = reported
        if self._run_seen is None:
            self._unsure = max(0.0, now - self._queued_at - reported) if self._queued_at is not None else 0.0
        else:
            when, before, said = self._run_seen
            least = max(reported, before + now - when)
            if reported > said:
                self._unsure = 0.0
        self._run_seen = (now, least, reported)
        return least, least + self._unsure

    def _queued_gap(self, d: TaskDetail, now: float) -> float:
        self._run_seen, self._queued_at = None, now
        if self._queued_since is None:
            self._queued_since = now
        cap = QUEUED_DELAY_S if d.current_position <= 2 else QUEUED_FAR_DELAY_S
        if self.window is not None:   # it may start right after this poll: back before its window
            return min(cap, max(self.window.edge_gap, self.window.start))
        queued = max(d.queue_duration_ms / 1000.0, now - self._queued_since)
        return min(cap, max(BLIND_FLOOR_S, QUEUED_FRACTION * queued))
