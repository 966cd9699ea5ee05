"""Model sources: GGUF conversion (names, config, tokenizer, formats), Hugging Face directories."""

import json
from pathlib import Path

import pytest

from mlx_host.engine.gguf import mlx_tensor_name
from mlx_host.errors import ModelLoadError
from mlx_host.models.sources import locate, needs_conversion, prepare
from mlx_host.models.spec import EMBEDDED_SOURCE


@pytest.mark.parametrize(
    ("gguf", "mlx"),
    [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("blk.7.attn_q.scales", "model.layers.7.self_attn.q_proj.scales"),
        ("blk.0.ffn_down.biases", "model.layers.0.mlp.down_proj.biases"),
        ("blk.29.ffn_norm.weight", "model.layers.29.post_attention_layernorm.weight"),
    ],
)
def test_tensor_names(gguf: str, mlx: str) -> None:
    assert mlx_tensor_name(gguf) == mlx


def test_unknown_tensor_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError):
        mlx_tensor_name("blk.0.mystery.weight")


def test_quantized_conversion_keeps_gguf_bits(tmp_path: Path) -> None:
    path = prepare(EMBEDDED_SOURCE, tmp_path, "quantized")
    config = json.loads((path / "config.json").read_text())
    assert config["rope_traditional"] is True and config["tie_word_embeddings"] is True
    assert config["quantization"]["group_size"] == 32
    assert config["quantization"]["model.layers.0.self_attn.q_proj"]["bits"] == 4
    tokenizer = json.loads((path / "tokenizer_config.json").read_text())
    assert tokenizer["eos_token"] == "<|im_end|>"
    assert "im_start" in tokenizer["chat_template"]
    # A second prepare finds the cached conversion by content hash.
    assert prepare(EMBEDDED_SOURCE, tmp_path, "quantized") == path


def test_missing_sources_fail_at_once() -> None:
    with pytest.raises(ModelLoadError, match="not installed"):
        locate("package:no-such-dist/x.gguf")
    with pytest.raises(ModelLoadError, match="hub"):
        locate("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_hugging_face_directory_is_converted_once(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    from mlx_host.engine.random_model import write_random_llama

    hf = write_random_llama(tmp_path / "hf", tiny_models["tiny-a"], file_format="pt")
    assert needs_conversion(str(hf))
    converted = prepare(str(hf), tmp_path / "cache", "float16")
    assert converted != hf and not needs_conversion(str(converted))
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert prepare(str(hf), tmp_path / "cache", "float16") == converted
