"""Log probabilities on the real SmolLM2, as OpenAI returns them: they are the model's own
log-softmax at each step (checked against the model run in-process), streamed chunks carry the
same entries as the whole answer, and legacy completions get their parallel lists."""

from __future__ import annotations

import math
from typing import Any

import httpx
import mlx.core as mx
import pytest
from mlx_lm import load

from mlx_host.testing import RunningServer

PROMPT = "The three primary colours are"


def post(server: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys['alpha']}"}
    return httpx.post(f"{server.api_url}/{path}", json=body, headers=headers, timeout=120)


def test_completion_logprobs_are_the_models_own(server: RunningServer) -> None:
    body = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0, "logprobs": 3}
    answer = post(server, "completions", body).json()["choices"][0]
    logprobs = answer["logprobs"]
    assert "".join(logprobs["tokens"]) == answer["text"]
    assert logprobs["text_offset"] == [
        sum(len(t) for t in logprobs["tokens"][:i]) for i in range(len(logprobs["tokens"]))
    ]
    # The same greedy steps in-process, on the same converted weights.
    engine = server.app.state.host.models.loaded()[0].engine
    model, tokenizer = load(str(engine.prepared.path))
    tokens = tokenizer.encode(PROMPT)
    for i, token_text in enumerate(logprobs["tokens"]):
        logits = model(mx.array(tokens)[None])[0, -1].astype(mx.float32)
        own = logits - mx.logsumexp(logits)
        chosen = int(mx.argmax(own).item())
        assert token_text == tokenizer.decode([chosen])
        assert logprobs["token_logprobs"][i] == pytest.approx(own[chosen].item(), abs=2e-3)
        top = logprobs["top_logprobs"][i]
        best = mx.argsort(-own)[:3].tolist()
        assert list(top) == [tokenizer.decode([t]) for t in best]
        for t in best:
            assert top[tokenizer.decode([t])] == pytest.approx(own[t].item(), abs=2e-3)
        tokens.append(chosen)


def test_chat_logprobs_streamed_equal_whole(server: RunningServer) -> None:
    body = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8,
            "temperature": 0, "logprobs": True, "top_logprobs": 2}  # fmt: skip
    whole = post(server, "chat/completions", body).json()["choices"][0]
    content = whole["logprobs"]["content"]
    assert "".join(e["token"] for e in content) == whole["message"]["content"]
    for entry in content:
        assert entry["bytes"] == list(entry["token"].encode())
        assert len(entry["top_logprobs"]) == 2 and entry["logprob"] <= 0
        assert entry["top_logprobs"][0]["logprob"] >= entry["top_logprobs"][1]["logprob"]
        assert math.isclose(entry["logprob"], entry["top_logprobs"][0]["logprob"])  # greedy
    stream = server.openai("alpha").chat.completions.create(model="default", stream=True, **body)
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs
                for e in c.choices[0].logprobs.content]  # fmt: skip
    assert [e.token for e in streamed] == [e["token"] for e in content]
    assert [e.logprob for e in streamed] == pytest.approx([e["logprob"] for e in content])


def test_no_logprobs_unless_asked_and_bad_asks_are_400(server: RunningServer) -> None:
    ask = [{"role": "user", "content": "Hi"}]
    plain = post(server, "chat/completions", {"messages": ask, "max_tokens": 2}).json()
    assert plain["choices"][0]["logprobs"] is None
    for body, param in [({"top_logprobs": 2}, "top_logprobs"),
                        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs")]:  # fmt: skip
        refused = post(server, "chat/completions", {"messages": ask, **body})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param
    too_many = post(server, "completions", {"prompt": "x", "logprobs": 6})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "logprobs"
