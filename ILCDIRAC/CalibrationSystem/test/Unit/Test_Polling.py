"""The retry hint of a ``wait`` answer (logic.polling.retry_after), a pure function."""
import pytest

from ILCDIRAC.CalibrationSystem.logic.polling import PollPolicy, StepProgress, retry_after

POLICY = PollPolicy(minimum=1.0, maximum=120.0, rate=20.0, closeSeconds=2.0)


def hints(progress, policy=POLICY, workers=range(1000), repeated=False):
    return [retry_after(progress, policy, w, repeated) for w in workers]


def test_a_step_at_its_threshold_is_asked_again_when_its_close_should_be_done():
    # 90 of 90 in: the close is being computed; 90 waiting workers spread over 90/20 = 4.5 s
    values = hints(StepProgress(results=90, needed=90, openSeconds=300.0), workers=range(90))
    assert min(values) == pytest.approx(2.0, abs=0.06)
    assert max(values) <= 2.0 + 4.5
    assert max(values) > 2.0 + 4.5 * 0.95, "the offsets cover the window"


def test_a_close_expected_within_the_window_brings_the_workers_back_then():
    # 60 of 90 in after 120 s: 0.5 reports/s, 30 missing -> expected in 60 + 2 s
    slow = PollPolicy(minimum=1.0, maximum=120.0, rate=0.5, closeSeconds=2.0)  # window 60 / 0.5 = 120 s
    assert retry_after(StepProgress(60, 90, 120.0), slow, 0, False) == pytest.approx(62.0)
    # worker 1's offset: the 120 s window times frac(1/golden ratio) = 0.618, capped at the maximum
    assert retry_after(StepProgress(60, 90, 120.0), slow, 1, False) == 120.0
    # asking again does not bring a worker back sooner than one window
    assert retry_after(StepProgress(60, 90, 120.0), slow, 0, True) == 120.0


def test_a_close_expected_later_than_the_window_is_polled_for_once_per_window():
    # 30 of 90 in after 60 s: expected in 122 s; 30 waiting at 20 calls/s -> a 1.5 s window
    values = hints(StepProgress(30, 90, 60.0), workers=range(30))
    assert min(values) == pytest.approx(1.5) and max(values) <= 3.0
    # worker 1: window + window * 0.618
    assert retry_after(StepProgress(30, 90, 60.0), POLICY, 1, False) == pytest.approx(1.5 * 1.618034, abs=1e-3)


def test_no_report_yet_means_one_window():
    assert retry_after(StepProgress(0, 90, 10.0), POLICY, 0, False) == 1.0  # 1 / 20 s, raised to the minimum
    slow = PollPolicy(minimum=1.0, maximum=120.0, rate=0.01, closeSeconds=2.0)
    assert retry_after(StepProgress(0, 90, 0.0), slow, 0, False) == 100.0


def test_bounds_are_respected():
    tight = PollPolicy(minimum=5.0, maximum=8.0, rate=1.0, closeSeconds=0.5)
    values = hints(StepProgress(900, 900, 10.0), tight) + hints(StepProgress(900, 900, 10.0), tight, repeated=True)
    assert min(values) == 5.0 and max(values) == 8.0


@pytest.mark.parametrize("waiting", [10, 100, 300, 1000])
def test_waiting_workers_together_poll_at_about_the_target_rate(waiting):
    """Each waiting worker follows its hints for ten minutes of a step whose close takes for
    ever: the calls per second stay at about the target rate, whatever the number of workers."""
    progress = StepProgress(results=waiting, needed=waiting, openSeconds=600.0)
    horizon, calls = 600.0, 0
    for worker in range(waiting):
        t = retry_after(progress, POLICY, worker, False)
        while t < horizon:
            calls += 1
            t += retry_after(progress, POLICY, worker, True)
    rate = calls / horizon
    assert rate <= 1.05 * POLICY.rate, rate
    # few workers ask about once per expected close plus window, never less often
    assert rate >= 0.9 * min(POLICY.rate, waiting / (POLICY.closeSeconds + waiting / POLICY.rate)), rate


def test_every_worker_gets_its_own_offset():
    values = hints(StepProgress(1000, 1000, 100.0))
    assert len(set(values)) > 990
