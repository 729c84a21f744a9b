"""The agent's verdicts on workers, for every situation it meets."""
import datetime

from ILCDIRAC.CalibrationSystem.logic.health import Limits, review_workers

NOW = datetime.datetime(2026, 11, 29, 12, 0, 0)
LIMITS = Limits(maxResubmissions=2, maxFailedWorkerFraction=0.5, stallTimeout=600)


def worker(i, status="running", lastStep=2, seconds=10, resubmissions=0, job=True):
    return {"workerID": i, "jobID": f"job{i}" if job else None, "status": status, "lastStep": lastStep,
            "lastSeen": NOW - datetime.timedelta(seconds=seconds), "resubmissions": resubmissions}


def calibration(status="running", step=3, needed=3):
    return {"status": status, "step": step, "resultsNeeded": needed}


def test_healthy_workers_are_left_alone():
    workers = [worker(i) for i in range(4)]
    review = review_workers(calibration(), workers, {f"job{i}": "running" for i in range(4)}, NOW, LIMITS)
    assert review.empty


def test_ended_jobs_of_a_running_calibration_are_resubmitted_with_their_worker_id():
    workers = [worker(i) for i in range(4)]
    states = {"job0": "failed", "job1": "done", "job2": "running", "job3": "running"}
    review = review_workers(calibration(), workers, states, NOW, LIMITS)
    assert review.resubmit == [0, 1] and review.kill == [] and review.fail is None


def test_a_stalled_worker_is_killed_and_resubmitted_but_a_slow_one_that_reported_is_not():
    workers = [worker(0, seconds=3600, lastStep=2), worker(1, seconds=3600, lastStep=3), worker(2), worker(3)]
    review = review_workers(calibration(step=3), workers, {f"job{i}": "running" for i in range(4)}, NOW, LIMITS)
    assert review.stalled == [0] and review.kill == ["job0"] and review.resubmit == [0]


def test_a_queued_job_that_never_reported_is_not_stalled():
    workers = [dict(worker(0), lastSeen=None, lastStep=None)] + [worker(i) for i in range(1, 4)]
    review = review_workers(calibration(), workers, {f"job{i}": "running" for i in range(4)}, NOW, LIMITS)
    assert review.empty


def test_workers_out_of_resubmissions_are_given_up_and_the_threshold_checked():
    workers = [worker(0, resubmissions=2), worker(1), worker(2), worker(3)]
    states = {"job0": "failed", "job1": "running", "job2": "running", "job3": "running"}
    review = review_workers(calibration(needed=3), workers, states, NOW, LIMITS)
    assert review.dead == [0] and review.fail is None
    review = review_workers(calibration(needed=4), workers, states, NOW, LIMITS)
    assert review.dead == [0]
    assert review.fail.startswith("only 3 of 4 workers are left") and "needs 4 results" in review.fail
    assert review.kill == ["job1", "job2", "job3"] and review.resubmit == []


def test_too_many_failed_workers_fail_the_calibration():
    workers = [worker(0, status="dead"), worker(1, status="dead"), worker(2, resubmissions=2)] + [
        worker(i) for i in range(3, 10)
    ]
    states = {f"job{i}": "running" for i in range(10)} | {"job2": "failed"}
    review = review_workers(calibration(needed=5), workers, states, NOW, LIMITS)
    assert review.fail is None  # 3 of 10 given up: within maxFailedWorkerFraction 0.5
    strict = Limits(maxResubmissions=2, maxFailedWorkerFraction=0.25, stallTimeout=600)
    review = review_workers(calibration(needed=5), workers, states, NOW, strict)
    assert review.fail.startswith("too many failed workers: 3 of 10")


def test_jobs_of_an_ended_calibration_are_killed_and_nothing_resubmitted():
    workers = [worker(0), worker(1, status="finished"), worker(2)]
    states = {"job0": "running", "job1": "done", "job2": "failed"}
    review = review_workers(calibration(status="killed"), workers, states, NOW, LIMITS)
    assert review.kill == ["job0"] and review.resubmit == [] and review.fail is None
