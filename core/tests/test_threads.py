"""The pooled threads that MLX work runs on: they run their work, park, and are lent again."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mlx_host.runtime.threads import MLXThread, run_in_pooled_thread


def test_a_thread_runs_its_target_and_is_lent_again() -> None:
    seen: list[threading.Thread] = []
    release = threading.Event()

    def work() -> None:
        seen.append(threading.current_thread())
        release.wait(5)

    first = MLXThread(work, name="mlx-first")
    first.start()
    assert first.is_alive() and first.ident is not None
    release.set()
    first.join(5)
    assert not first.is_alive() and first.ident is None
    with pytest.raises(RuntimeError):
        first.start()  # once, as a thread runs

    # The parked thread is lent again (others of the pool may be lent instead, if parked).
    second = MLXThread(work, name="mlx-second")
    second.start()
    second.join(5)
    assert not second.is_alive()
    assert seen[0].is_alive() and seen[0].daemon  # the first one's thread never ended
    assert seen[1].is_alive() and seen[1].name == "mlx-idle"


def test_work_that_fails_does_not_end_the_thread(caplog: pytest.LogCaptureFixture) -> None:
    runners: list[threading.Thread] = []

    def fail() -> None:
        runners.append(threading.current_thread())
        raise RuntimeError("boom")

    job = MLXThread(fail, name="mlx-failing")
    job.start()
    job.join(5)
    assert not job.is_alive()
    assert runners[0].is_alive()
    assert "the work of mlx-failing failed" in caplog.text


def test_an_exception_raised_into_a_parked_thread_does_not_end_it() -> None:
    started, release = threading.Event(), threading.Event()
    runners: list[threading.Thread] = []

    def work() -> None:
        runners.append(threading.current_thread())
        started.set()
        release.wait(5)

    victim = MLXThread(work, name="mlx-victim")
    victim.start()
    assert started.wait(5)
    # What test_fault_isolation does to a model's worker: SystemExit raised in its thread,
    # here once its work is over (after the work's own handler could catch it).
    import ctypes

    runner = runners[0]
    release.set()
    victim.join(5)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(runner.ident), ctypes.py_object(SystemExit)
    )
    # The parked thread receives it when it wakes for its next job, which still runs.
    after = MLXThread(lambda: runners.append(threading.current_thread()), name="mlx-after")
    after.start()
    after.join(5)
    assert not after.is_alive() and len(runners) == 2
    assert all(r.is_alive() for r in runners)


def test_run_in_pooled_thread_returns_results_and_raises_errors() -> None:
    async def scenario() -> None:
        assert await run_in_pooled_thread(pow, 2, 10) == 1024
        with pytest.raises(ZeroDivisionError):
            await run_in_pooled_thread(divmod, 1, 0)

    asyncio.run(scenario())
