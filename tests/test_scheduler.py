"""The background scheduler: pool, timers, periodic jobs, errors, drain and close."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from tierstore import StoreClosed
from tierstore.scheduler import Scheduler

WAIT = 5.0  # generous bound on waits that should end at once; never reached when correct


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    sched = Scheduler(workers=2, name="test-sched")
    yield sched
    sched.close(timeout=WAIT)


def test_submit_runs_on_a_named_daemon_thread(scheduler: Scheduler) -> None:
    seen: list[threading.Thread] = []
    ran = threading.Event()
    scheduler.submit(lambda: (seen.append(threading.current_thread()), ran.set()))
    assert ran.wait(WAIT)
    assert seen[0].name.startswith("test-sched")
    assert seen[0].daemon


def test_no_thread_starts_before_work() -> None:
    sched = Scheduler()
    before = threading.active_count()
    assert sched.threads == 0
    assert threading.active_count() == before
    sched.close()


def test_pool_is_bounded_by_workers(scheduler: Scheduler) -> None:
    release = threading.Event()
    running = threading.Semaphore(0)
    concurrent = 0
    peak = 0
    lock = threading.Lock()

    def job() -> None:
        nonlocal concurrent, peak
        with lock:
            concurrent += 1
            peak = max(peak, concurrent)
        running.release()
        release.wait(WAIT)
        with lock:
            concurrent -= 1

    for _ in range(6):
        scheduler.submit(job)
    assert running.acquire(timeout=WAIT) and running.acquire(timeout=WAIT)
    assert not running.acquire(timeout=0.05)  # a third job cannot start while two block
    release.set()
    assert scheduler.drain(WAIT)
    assert peak == 2
    assert scheduler.threads == 2


def test_exceptions_are_logged_counted_and_passed_on(scheduler: Scheduler, caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BaseException] = []
    boom = RuntimeError("boom")

    def fail() -> None:
        raise boom

    with caplog.at_level(logging.ERROR, logger="tierstore"):
        scheduler.submit(fail, on_error=errors.append)
        assert scheduler.drain(WAIT)
    assert errors == [boom]
    assert scheduler.errors == 1
    assert any(record.exc_info and record.exc_info[1] is boom for record in caplog.records)
    # the worker survived
    ran = threading.Event()
    scheduler.submit(ran.set)
    assert ran.wait(WAIT)


def test_after_runs_once_after_its_delay(scheduler: Scheduler) -> None:
    ran = threading.Event()
    times: list[float] = []
    start = time.monotonic()
    scheduler.after(0.05, lambda: (times.append(time.monotonic()), ran.set()))
    assert ran.wait(WAIT)
    assert times[0] - start >= 0.05
    assert scheduler.drain(WAIT)
    assert len(times) == 1


def test_cancelled_timer_never_runs(scheduler: Scheduler) -> None:
    ran = threading.Event()
    handle = scheduler.after(0.05, ran.set)
    handle.cancel()
    assert handle.cancelled
    sentinel = threading.Event()
    scheduler.after(0.1, sentinel.set)  # due after the cancelled one
    assert sentinel.wait(WAIT)
    assert not ran.is_set()


def test_every_repeats_without_overlapping_itself(scheduler: Scheduler) -> None:
    active = 0
    overlaps = 0
    runs = 0
    third = threading.Event()
    lock = threading.Lock()

    def job() -> None:
        nonlocal active, overlaps, runs
        with lock:
            active += 1
            overlaps += active > 1
        time.sleep(0.03)  # longer than the interval: the next run is due before this one ends
        with lock:
            active -= 1
            runs += 1
            if runs == 3:
                third.set()

    handle = scheduler.every(0.01, job, first_delay=0)
    assert third.wait(WAIT)
    handle.cancel()
    assert scheduler.drain(WAIT)
    settled = runs
    assert overlaps == 0
    assert scheduler.drain(WAIT) and runs == settled  # cancelled: no more runs


def test_every_first_delay_defaults_to_the_interval(scheduler: Scheduler) -> None:
    ran = threading.Event()
    handle = scheduler.every(60.0, ran.set)
    assert scheduler.drain(WAIT)
    assert not ran.is_set()
    handle.cancel()


def test_drain_waits_for_queued_and_running_work(scheduler: Scheduler) -> None:
    release = threading.Event()
    done: list[int] = []

    def job(i: int) -> None:
        release.wait(WAIT)
        done.append(i)

    for i in range(5):
        scheduler.submit(lambda i=i: job(i))  # type: ignore[misc]
    assert scheduler.drain(timeout=0.05) is False
    release.set()
    assert scheduler.drain(WAIT) is True
    assert sorted(done) == [0, 1, 2, 3, 4]


def test_drain_ignores_timers_not_yet_due(scheduler: Scheduler) -> None:
    scheduler.after(60.0, lambda: None)
    assert scheduler.drain(timeout=1.0) is True


def test_drain_waits_for_timers_already_due(scheduler: Scheduler) -> None:
    release = threading.Event()
    ran = threading.Event()
    scheduler.submit(lambda: release.wait(WAIT))
    scheduler.submit(lambda: release.wait(WAIT))  # both workers busy: the timer cannot run yet
    scheduler.after(0.0, ran.set)  # due before drain starts, but no worker is free to run it
    threading.Timer(0.05, release.set).start()
    assert scheduler.drain(WAIT)
    assert ran.is_set()


def test_drain_from_a_job_does_not_wait_for_itself(scheduler: Scheduler) -> None:
    result: list[bool] = []
    scheduler.submit(lambda: result.append(scheduler.drain(timeout=WAIT)))
    assert scheduler.drain(WAIT)
    assert result == [True]


def test_close_cancels_timers_waits_for_running_and_refuses_new_work() -> None:
    sched = Scheduler(name="closing")
    started = threading.Event()
    finished = threading.Event()
    timer_ran = threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.05)
        finished.set()

    sched.submit(slow)
    sched.after(0.1, timer_ran.set)
    assert started.wait(WAIT)
    assert sched.close() is True
    assert finished.is_set()  # close waited for the running job
    assert sched.closed
    assert sched.close() is True  # idempotent
    with pytest.raises(StoreClosed):
        sched.submit(lambda: None)
    with pytest.raises(StoreClosed):
        sched.after(0, lambda: None)
    time.sleep(0.15)  # past the timer's due time: a negative check needs the time to pass
    assert not timer_ran.is_set()
    assert not any(t.name.startswith("closing") for t in threading.enumerate())


def test_close_with_timeout_reports_a_job_still_running() -> None:
    sched = Scheduler(name="hung")
    release = threading.Event()
    started = threading.Event()
    sched.submit(lambda: (started.set(), release.wait(WAIT)))
    assert started.wait(WAIT)
    assert sched.close(timeout=0.05) is False
    release.set()
    assert sched.close(timeout=WAIT) is True


def test_close_from_a_job_does_not_deadlock() -> None:
    sched = Scheduler(name="self-close")
    result: list[bool] = []
    done = threading.Event()
    sched.submit(lambda: (result.append(sched.close(timeout=WAIT)), done.set()))
    assert done.wait(WAIT)
    assert result == [True]
    assert sched.closed


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.after(-1, lambda: None), ValueError),
        (lambda s: s.after("1", lambda: None), TypeError),
        (lambda s: s.every(0, lambda: None), ValueError),
        (lambda s: s.every(float("inf"), lambda: None), ValueError),
        (lambda s: s.every(1, lambda: None, first_delay=-1), ValueError),
        (lambda s: s.submit(42), TypeError),
        (lambda s: s.drain(timeout=-1), ValueError),
    ],
)
def test_bad_arguments_are_refused(scheduler: Scheduler, call: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        call(scheduler)  # type: ignore[operator]
    assert scheduler.threads == 0


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="workers"):
        Scheduler(workers=0)
    with pytest.raises(TypeError, match="workers"):
        Scheduler(workers=1.5)  # type: ignore[arg-type]


def test_waits_far_past_what_a_lock_can_wait_are_waited_as_forever(scheduler: Scheduler) -> None:
    # 1e300 s is finite, so accepted; waiting for it must not raise OverflowError (from drain,
    # or in the timer thread, which would stop every later timer of the store)
    scheduler.after(1e300, lambda: None)
    started, release = threading.Event(), threading.Event()
    scheduler.submit(lambda: (started.set(), release.wait(WAIT)))
    assert started.wait(WAIT)
    threading.Timer(0.05, release.set).start()
    assert scheduler.drain(1e300)  # waits for the running job, past which the timer thread waited too
    ran = threading.Event()
    scheduler.after(0.01, ran.set)
    assert ran.wait(WAIT)
