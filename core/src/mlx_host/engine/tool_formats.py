"""mlx-lm's tool-call formats by parser name (``json_tools``: Hermes/Qwen ``<tool_call>``
JSON; ``mistral``: ``[TOOL_CALLS]``; ...), for engines that name theirs rather than read it
from a tokenizer, as the fake engine does."""

from __future__ import annotations

import importlib

from mlx_host.generation import ToolCallFormat


def named(parser: str) -> ToolCallFormat:
    """The format of ``mlx_lm.tool_parsers.<parser>``."""
    module = importlib.import_module(f"mlx_lm.tool_parsers.{parser}")
    return ToolCallFormat(
        module.tool_call_start, module.tool_call_end or "", module.parse_tool_call, parser
    )
