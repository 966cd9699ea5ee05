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
    assert first.is_alive()
    release.set()
    first.join(5)
    assert not first.is_alive()
    assert seen[0].name in {"mlx-first", "mlx-idle"}

    second = MLXThread(work, name="mlx-second")
    second.start()
    second.join(5)
    assert not second.is_alive()
    # The parked thread took the second job: no new thread was started for it.
    assert seen[1] is seen[0]
    assert seen[0].is_alive() and seen[0].daemon


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


def test_run_in_pooled_thread_returns_results_and_raises_errors() -> None:
    async def scenario() -> None:
        assert await run_in_pooled_thread(pow, 2, 10) == 1024
        with pytest.raises(ZeroDivisionError):
            await run_in_pooled_thread(divmod, 1, 0)

    asyncio.run(scenario())
