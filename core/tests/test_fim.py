"""Fill in the middle through /completions: on a small random llama whose tokenizer has
StarCoder's FIM tokens (written with real MLX code), and refused for SmolLM2, which has none."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import plugin_manager
from tokenizers import Tokenizer

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.fim import FORMATS
from mlx_host.testing import RunningServer, run_server

CODER = ServiceSpec(
    name="coder",
    key_prefix="coder_",
    completion_model="tiny-coder",
    policy=ServicePolicy(temperature=0.0, max_tokens=8, allowed_models=("smollm2",)),
)
PREFIX = "def add(a, b):\n    return "
SUFFIX = "\n\nprint(add(1, 2))  # <fim_middle> in a comment is text\n"


@pytest.fixture(scope="module")
def coder_dir(tmp_path_factory: pytest.TempPathFactory, mlx_host_cache_dir: Path) -> Path:
    """A random llama with SmolLM2's tokenizer, three of whose unused special tokens are
    renamed to StarCoder's FIM tokens."""
    from mlx_host.engine.random_model import write_random_llama
    from mlx_host.models.sources import prepare
    from mlx_host.models.spec import EMBEDDED_SOURCE

    smollm2 = prepare(EMBEDDED_SOURCE, mlx_host_cache_dir, "quantized")
    tokenizer_dir = tmp_path_factory.mktemp("fim-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2 / name, tokenizer_dir / name)
    fim = FORMATS[0]
    renames = {"<repo_name>": fim.begin, "<reponame>": fim.hole, "<file_sep>": fim.end}
    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    for token in spec["added_tokens"]:
        token["content"] = renames.get(token["content"], token["content"])
    vocab = spec["model"]["vocab"]
    for old, new in renames.items():
        vocab[new] = vocab.pop(old)
    (tokenizer_dir / "tokenizer.json").write_text(json.dumps(spec))
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    for entry in config.get("added_tokens_decoder", {}).values():
        entry["content"] = renames.get(entry["content"], entry["content"])
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(config))
    return write_random_llama(tmp_path_factory.mktemp("coder") / "m", tokenizer_dir)


@pytest.fixture(scope="module")
def server(coder_dir: Path, mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    settings = {"models": {"tiny-coder": str(coder_dir)}}
    with run_server(settings, plugin_manager(CODER), mlx_host_cache_dir) as running:
        yield running


def complete(server: RunningServer, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys['coder']}"}
    return httpx.post(f"{server.api_url}/completions", json=body, headers=headers, timeout=120)


def test_suffix_builds_the_fim_prompt(server: RunningServer, coder_dir: Path) -> None:
    response = complete(server, prompt=PREFIX, suffix=SUFFIX, max_tokens=4)
    assert response.status_code == 200, response.text
    vocab = Tokenizer.from_file(str(coder_dir / "tokenizer.json")).get_vocab()
    engine = server.app.state.host.models.get_loaded("tiny-coder").engine
    prompt = engine.fill_in_middle(PREFIX, SUFFIX)
    fim = FORMATS[0]
    assert prompt[0] == vocab[fim.begin] and prompt[-1] == vocab[fim.end]
    assert prompt.count(vocab[fim.end]) == 1  # the comment's "<fim_middle>" stayed text
    hole = prompt.index(vocab[fim.hole])
    assert engine.decode(prompt[1:hole]) == PREFIX
    assert engine.decode(prompt[hole + 1 : -1]) == SUFFIX
    assert response.json()["usage"]["prompt_tokens"] == len(prompt)


def test_the_start_of_a_file_may_be_filled_in(server: RunningServer) -> None:
    response = complete(server, prompt="", suffix=SUFFIX, max_tokens=2)
    assert response.status_code == 200, response.text
    assert complete(server, prompt="").status_code == 400  # without suffix: nothing to do


def test_models_without_fim_tokens_refuse_suffix(server: RunningServer) -> None:
    response = complete(server, model="smollm2", prompt=PREFIX, suffix=SUFFIX)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "suffix" and "fill-in-the-middle" in error["message"]
