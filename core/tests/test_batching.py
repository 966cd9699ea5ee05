"""The continuous batch: prompt-cache reuse across turns, the bounded queue, a burst that
starts in one step, how many prompts are prefilled together, and speculative decoding of a
lone greedy request."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
from conftest import ALPHA, held_after_first_token, plugin_manager

from mlx_host.engine.scheduler import (
    _STOP,
    PREFILL_CHUNK_TOKENS,
    BatchScheduler,
    _Cancel,
    _Job,
    prompts_per_prefill,
)
from mlx_host.generation import SamplingParams
from mlx_host.models.memory import MemoryBudget
from mlx_host.testing import RunningServer, run_server


def test_second_turn_reuses_the_first_turns_cache(server: RunningServer) -> None:
    client = server.openai("alpha")
    turn = [{"role": "user", "content": "Tell me one fact about owls."}]
    first = client.chat.completions.create(model="default", messages=turn, max_tokens=16)
    turn += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And one about cats?"},
    ]
    second = client.chat.completions.create(model="default", messages=turn, max_tokens=16)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens - 1
    assert cached < second.usage.prompt_tokens


def test_cached_prompt_gives_the_same_greedy_answer(server: RunningServer) -> None:
    client = server.openai("alpha")
    ask = [{"role": "user", "content": "What is the largest planet?"}]
    cold = client.chat.completions.create(model="default", messages=ask, max_tokens=20)
    warm = client.chat.completions.create(model="default", messages=ask, max_tokens=20)
    assert warm.usage.prompt_tokens_details.cached_tokens == warm.usage.prompt_tokens - 1
    assert warm.choices[0].message.content == cold.choices[0].message.content


CODE = """def area(width, height):
    result = width * height
    return result


def perimeter(width, height):
    result = 2 * (width + height)
    return result
"""


def draft_tokens(server: RunningServer) -> dict[str, float]:
    """The model's draft-token counters in ``/metrics``, by outcome."""
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    text = httpx.get(f"{server.url}/metrics", headers=headers).text
    prefix = 'mlx_host_draft_tokens_total{model="smollm2-135m-instruct",outcome="'
    return {
        line[len(prefix) :].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def test_a_code_edit_decodes_speculatively_to_the_greedy_answer(server: RunningServer) -> None:
    client = server.openai("alpha")
    ask = [
        {"role": "user", "content": f"{CODE}\nRewrite this code with `result` renamed to `value`."}
    ]
    before = draft_tokens(server)
    fast = client.chat.completions.create(model="default", messages=ask, max_tokens=80)
    after = draft_tokens(server)
    assert after["accepted"] > before.get("accepted", 0)
    # Log-probabilities are read at every step, so this one decodes a token at a time.
    slow = client.chat.completions.create(
        model="default", messages=ask, max_tokens=80, logprobs=True
    )
    assert draft_tokens(server) == after
    assert fast.choices[0].message.content == slow.choices[0].message.content
    assert fast.usage.completion_tokens == slow.usage.completion_tokens


def test_full_queue_is_429_with_retry_after(mlx_host_cache_dir: Path) -> None:
    settings = {"max_batch_size": 1, "max_queued_requests": 0}
    with run_server(settings, plugin_manager(ALPHA), mlx_host_cache_dir) as server:
        url = f"{server.api_url}/chat/completions"
        headers = {"Authorization": f"Bearer {server.keys['alpha']}"}
        body = {"messages": [{"role": "user", "content": "Tell a long story."}],
                "max_tokens": 200, "stream": True}  # fmt: skip
        client = server.openai("alpha", max_retries=0)
        hi = [{"role": "user", "content": "hi"}]
        client.chat.completions.create(model="default", messages=hi, max_tokens=1)
        with (
            held_after_first_token(server),
            httpx.stream("POST", url, headers=headers, json=body, timeout=60) as running,
        ):
            assert running.status_code == 200
            rejected = httpx.post(url, headers=headers, json={**body, "stream": False})
            assert rejected.status_code == 429
            assert rejected.headers["Retry-After"] == "1"
            error = rejected.json()["error"]
            assert error["code"] == "queue_full"
            assert "has 1 request running or queued" in error["message"]
        deadline = time.monotonic() + 10  # the closed stream frees its slot
        while True:
            try:
                ok = client.chat.completions.create(model="default", messages=hi, max_tokens=2)
                break
            except openai.RateLimitError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert ok.choices[0].finish_reason


def test_text_completion(server: RunningServer) -> None:
    client = server.openai("alpha")
    reply = client.completions.create(
        model="default", prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert reply.object == "text_completion"
    assert "Paris" in reply.choices[0].text
    assert reply.usage.completion_tokens <= 6


def test_text_completion_streams(server: RunningServer) -> None:
    stream = server.openai("alpha").completions.create(
        model="default", prompt="One, two, three,", max_tokens=12, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(pieces) > 3
    assert chunks[-1].usage.completion_tokens == 12
    assert any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)


def test_short_prompts_are_prefilled_together_and_long_ones_eight_at_a_time() -> None:
    assert prompts_per_prefill(30, max_batch_size=64) == 64  # a burst of chat turns: at once
    assert prompts_per_prefill(30, max_batch_size=16) == 16  # never more than the batch holds
    assert prompts_per_prefill(512, max_batch_size=64) == 8
    assert prompts_per_prefill(20_000, max_batch_size=64) == 8  # chunked: 512 at a time each
    assert prompts_per_prefill(100, max_batch_size=64) * 100 <= PREFILL_CHUNK_TOKENS
    assert prompts_per_prefill(1, max_batch_size=64) == 64  # a cached prompt: one token left
    assert prompts_per_prefill(1, max_batch_size=1) == 1


def test_requests_arriving_together_at_an_idle_model_start_in_one_step(
    server: RunningServer,
) -> None:
    client = server.openai("alpha")
    ask = [{"role": "user", "content": "Name a colour."}]
    client.chat.completions.create(model="default", messages=ask, max_tokens=1)  # loaded, idle
    loaded = server.app.state.host.models.get_loaded("smollm2-135m-instruct")
    scheduler = loaded.engine.scheduler
    burst, first_step = 4, []
    take_arrivals, step = scheduler._take_arrivals, scheduler._step

    def arrivals_within_the_window() -> bool:
        # However slow the machine, the rest of the burst is in the inbox by now.
        deadline = time.monotonic() + 60
        while len(scheduler._waiting) + scheduler._inbox.qsize() < burst:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        return take_arrivals()

    def recording_step() -> None:
        first_step.append(len(scheduler._jobs))
        step()

    scheduler._take_arrivals = arrivals_within_the_window
    scheduler._step = recording_step
    try:
        with ThreadPoolExecutor(burst) as pool:
            answers = list(pool.map(
                lambda _: client.chat.completions.create(
                    model="default", messages=ask, max_tokens=2
                ),
                range(burst),
            ))  # fmt: skip
    finally:
        del scheduler._take_arrivals, scheduler._step
    assert all(a.usage.completion_tokens == 2 for a in answers)
    assert first_step[0] == burst


def test_taking_arrivals_stops_at_a_gap_a_full_batch_or_a_stop() -> None:
    claim = MemoryBudget(1 << 30, held=lambda: 0).claim("test")
    scheduler = BatchScheduler(Path("unused"), claim=claim, max_batch_size=3)
    jobs = [_Job([1], SamplingParams(max_tokens=1), emit=lambda _: None) for _ in range(4)]
    scheduler._waiting.append(jobs[0])  # the request that woke the worker
    # It is cancelled as another arrives: an arrival all the same, so the worker waits on.
    scheduler._inbox.put(_Cancel(jobs[0]))
    scheduler._inbox.put(jobs[1])
    assert scheduler._take_arrivals()  # then nothing came
    assert list(scheduler._waiting) == [jobs[1]]
    for job in jobs[2:]:
        scheduler._inbox.put(job)
    scheduler._inbox.put(_STOP)
    assert not scheduler._take_arrivals()
    # Three wait: as many as the batch holds, so the worker starts without looking again.
    scheduler._inbox.put(_STOP)
    assert scheduler._take_arrivals()
    assert list(scheduler._waiting) == jobs[1:]
