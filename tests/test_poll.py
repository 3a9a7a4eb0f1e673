"""The poll schedule, replayed on a virtual clock (no timing): when a finished task is noticed, and how many
status calls a task costs. Each status call takes a round trip (``rtt``); the platform answers halfway."""
import statistics

from conftest import core

poll, wire, J = core("poll"), core("wire"), core("journal")


def exact(run_s: float) -> int:
    return int(run_s * 1000)


def replay(expected, spread, run_s: float, queue_s: float = 0.0, position: int = 1, rtt: float = 0.01,
           reported=exact):
    """Polls of one task: (lag after its end as the platform sees it, status calls). ``reported`` is the run
    time the platform says for a true one (exact by default)."""
    now = [0.0]
    sched = poll.PollSchedule(expected, spread, clock=lambda: now[0])
    sent, calls = 0.0, 0
    while True:
        calls += 1
        seen = sent + rtt / 2
        if seen < queue_s:
            d = wire.TaskDetail(prompt_id="1", status=wire.QUEUED, current_position=position, queue_size=position,
                                queue_duration_ms=int(seen * 1000))
        elif seen < queue_s + run_s:
            d = wire.TaskDetail(prompt_id="1", status=wire.RUNNING, run_duration_ms=reported(seen - queue_s))
        else:
            return seen - queue_s - run_s, calls
        now[0] = sent + rtt
        sent = now[0] + sched.next_delay(d)


def grid(expected: float, share: float = 0.30, n: int = 61) -> list:
    """True run lengths evenly over +-``share`` of the expected one."""
    return [expected * (1 - share + 2 * share * k / (n - 1)) for k in range(n)]


def test_every_run_within_30_percent_of_a_history_of_equal_runs_is_noticed_within_100_ms():
    """Issue 33: earlier runs all took 3 s (a spread of 20 ms), but a run moves by a few hundred ms (the
    cloud's pickup, the graph's own time). Every end from -30% to +30% is noticed within 100 ms, on loopback
    and behind a 60 ms link, whatever the queue before it (before: up to ~0.3 s late)."""
    for expected in (0.6, 1.0, 2.0, 3.0, 4.0, 6.0):
        for rtt in (0.002, 0.06):
            for queue_s in (0.0, 0.13, 0.47):
                lags = [replay(expected, expected * 0.007, r, queue_s=queue_s, rtt=rtt)[0] for r in grid(expected)]
                assert max(lags) <= 0.1, (expected, rtt, queue_s, max(lags))


def test_runs_near_the_expected_end_are_noticed_sooner():
    """Most runs end near what history says: within +-10% of a 3 s history the median lag is half the bar."""
    lags = [replay(3.0, 0.02, r)[0] for r in grid(3.0, 0.10)]
    assert statistics.median(lags) <= 0.05 and max(lags) <= 0.1


def test_a_platform_that_updates_its_run_time_once_a_second_does_not_shift_the_window():
    """run_duration counted in whole seconds: the time since the last report is this process's own clock."""
    for r in grid(3.0):
        assert replay(3.0, 0.02, r, queue_s=0.3, reported=lambda s: int(s) * 1000)[0] <= 0.1, r


def test_a_platform_that_reports_no_run_time_while_it_runs_is_still_watched_over_the_whole_window():
    """run_duration stays 0 until the end: the run may have started any time after the last answer that said
    queued, so the window is watched from the earliest moment it could begin."""
    for queue_s in (0.0, 0.13, 0.47, 2.2):
        for r in grid(3.0):
            assert replay(3.0, 0.02, r, queue_s=queue_s, reported=lambda s: 0)[0] <= 0.1, (queue_s, r)


def test_one_slow_earlier_run_does_not_thin_out_the_polls():
    """A first run that loaded its models took 8 s, the others 3 s: the spread the journal reports is robust,
    so the next 3 s run is still noticed within 100 ms wherever it ends in +-30%."""
    j = J.Journal()
    for ms in (8000, 3000, 3010, 2990, 3005):
        j.update(j.begin(plan_hash="p", shape_hash="s"), status="succeeded", run_ms=ms)
    est = j.estimate("other", "s")
    for r in grid(3.0):
        assert replay(est["run_ms"] / 1000, est["run_ms_spread"] / 1000, r)[0] <= 0.1, r


def test_a_queued_task_expected_to_be_short_is_asked_again_before_it_could_end():
    """A fan-out's run waits in the queue; history says it runs 0.6 s: a poll while queued does not wait 1 s."""
    for queue_s in (0.05, 0.1, 0.9, 3.0):
        assert replay(0.6, 0.01, 0.42, queue_s=queue_s)[0] <= 0.1, queue_s


def test_a_first_run_is_noticed_within_250_ms_early_on():
    """A part never run before (no history): tasks up to 8 s, after a queue of up to 2 s or none, are noticed
    within 250 ms; a 3 s one within 100 ms. (After a longer queue, polls while queued thin out to one a
    second: a run that starts right after one is noticed within a second.)"""
    for run_s in (0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0):
        for queue_s in (0.0, 0.3, 1.1, 2.0):
            lag, _ = replay(None, None, run_s, queue_s=queue_s)
            assert lag <= 0.25, (run_s, queue_s, lag)
    assert replay(None, None, 3.0)[0] <= 0.1


def test_ten_minute_tasks_average_at_most_one_status_call_per_second():
    """With history (ending anywhere in +-30%, histories narrow and wide) and without (a first run), on
    loopback and behind a link."""
    for run_s in (420.0, 540.0, 590.0, 600.0, 610.0, 660.0, 780.0, 1200.0):
        for spread in (None, 1.0, 18.0, 60.0):
            for rtt in (0.002, 0.06):
                _, calls = replay(600.0, spread, run_s, queue_s=20.0, position=5, rtt=rtt)
                assert calls / (run_s + 20.0) <= 1.0, (run_s, spread, rtt, calls)
    for queue_s, position in ((20.0, 5), (20.0, 1), (0.0, 1)):
        _, calls = replay(None, None, 600.0, queue_s=queue_s, position=position)
        assert calls / (600.0 + queue_s) <= 1.0, (queue_s, position, calls)


def test_a_long_task_is_noticed_within_a_small_share_of_its_run():
    """A 10-minute task cannot be watched every 100 ms over +-3 minutes at one call a second: the gaps widen
    evenly instead, and any end within +-30% is still noticed within 0.3% of the run."""
    lags = [replay(600.0, 2.0, r, queue_s=5.0)[0] for r in grid(600.0, n=41)]
    assert max(lags) <= 0.003 * 600.0 and statistics.median(lags) <= 0.002 * 600.0


def test_a_slow_link_does_not_widen_the_gap():
    """Behind a 60 ms link, the round trip is taken off the sleep: the gaps the platform sees are the schedule's."""
    near = [replay(3.0, 0.02, r, rtt=0.06)[0] for r in grid(3.0, 0.10)]
    assert statistics.median(near) <= 0.05


def test_first_run_polls_dense_then_thin():
    now = [0.0]
    s = poll.PollSchedule(None, clock=lambda: now[0])

    def at(t):
        now[0] = t
        return s.gap(wire.TaskDetail(prompt_id="1", status=wire.RUNNING, run_duration_ms=int(t * 1000)), t)
    assert at(0.1) == poll.BLIND_FLOOR_S and at(3.0) <= 0.1 and at(600) == poll.BLIND_CAP_S
