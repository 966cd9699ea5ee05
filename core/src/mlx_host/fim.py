"""Fill-in-the-middle: the prompt a code model completes between a prefix and a suffix, in the
format its tokenizer was trained with (found by its FIM tokens).

MLX-free: it needs only the tokenizer's vocabulary and an encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FIMFormat:
    """A family's three FIM tokens, in prefix-suffix-middle order: the model writes the middle
    after ``begin`` prefix ``hole`` suffix ``end``."""

    begin: str
    hole: str
    end: str


#: Known families, by their tokens (StarCoder and SmolLM1, Qwen2.5-Coder, DeepSeek-Coder).
FORMATS = (
    FIMFormat("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    FIMFormat("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    # DeepSeek's tokens are spelled with full-width bars and a lower-one-eighth block.
    FIMFormat(
        "<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>", "<\uff5cfim\u2581end\uff5c>"
    ),
)


def fim_tokens(vocabulary: Mapping[str, int]) -> tuple[int, int, int] | None:
    """The ids of the first FIM format whose three tokens the vocabulary has, in
    prefix-suffix-middle order (None: it has no FIM)."""
    for f in FORMATS:
        if {f.begin, f.hole, f.end} <= vocabulary.keys():
            return vocabulary[f.begin], vocabulary[f.hole], vocabulary[f.end]
    return None


def fim_prompt(
    tokens: tuple[int, int, int],
    encode: Callable[[str], list[int]],
    prefix: str,
    suffix: str,
) -> list[int]:
    """The prompt's tokens: the FIM tokens by id (never by their text, which a user's code may
    contain), the prefix and the suffix encoded as plain text."""
    begin, hole, end = tokens
    return [begin, *encode(prefix), hole, *encode(suffix), end]
