"""A response format as an llguidance grammar, checked before anything is generated: every
keyword of the schema is enforced while decoding, or the request is refused with a 400 that
says which (never an answer decoded without a rule the caller asked for).

MLX-free, so the real engine and the fake one refuse the same schemas.
"""

from __future__ import annotations

import json
import re
from typing import Any

import llguidance

from mlx_host.errors import InvalidRequestError
from mlx_host.generation import OutputFormat, ToolCallFormat

#: Options fixed here, whatever the schema says: a schema's own ``x-guidance`` could make
#: llguidance lenient (unsupported keywords become warnings, and go unenforced). No optional
#: whitespace: small models given the choice pad JSON with newlines until max_tokens runs out.
_OPTIONS: Any = {"lenient": False, "coerce_one_of": False, "whitespace_flexible": False}
#: Tool arguments as Hermes/Qwen templates write them: strict, spaced as ", " and ": ".
_TOOL_JSON: Any = {**_OPTIONS, "item_separator": ", ", "key_separator": ": "}
#: Longest reason quoted back to the caller.
_MAX_REASON = 300


def compile_format(fmt: OutputFormat, tokenizer: llguidance.LLTokenizer | None = None) -> str:
    """The grammar that holds answers to ``fmt``; 400 naming what cannot be enforced. With
    the model's ``tokenizer``, its special tokens are checked too (without, they are left to
    the engine that has one)."""
    try:
        if fmt.type == "grammar":
            grammar = llguidance.LLMatcher.grammar_from_lark(fmt.grammar or "")
        else:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                fmt.json_schema(), overrides=_OPTIONS
            )
    except (ValueError, TypeError) as exc:
        raise bad_schema(fmt, str(exc)) from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    if tokenizer is None:
        messages = [m for m in messages if not m.startswith("no tokenizer")]
    if is_error or messages:  # a warning is a rule that would not be enforced
        raise bad_schema(fmt, messages[0] if messages else "it is not valid")
    return grammar


def bad_schema(fmt: OutputFormat, why: str) -> InvalidRequestError:
    """The 400 for a format that cannot be enforced, with llguidance's reason on one line."""
    if fmt.type == "grammar":  # a forced tool call: its functions' parameters
        return InvalidRequestError(
            f"tools: the tool call cannot be enforced: {_reason(why)}",
            param="tools",
            code="unsupported_schema",
        )
    name = f" {fmt.name!r}" if fmt.name else ""
    return InvalidRequestError(
        f"response_format: the JSON schema{name} cannot be enforced: {_reason(why)}",
        param="response_format",
        code="unsupported_schema",
    )


def tool_call_grammar(
    fmt: ToolCallFormat, tools: list[dict[str, Any]], name: str | None, parallel: bool
) -> OutputFormat:
    """An answer that is tool calls only, in the model's format, each naming one of ``tools``
    (or the function ``name``) with arguments valid against its parameters: how
    ``tool_choice`` required or a named function is enforced. 400 for formats this cannot
    write a grammar for (today: Hermes/Qwen's ``<tool_call>`` JSON, mlx-lm's json_tools)."""
    if fmt.family != "json_tools":
        raise InvalidRequestError(
            f"tool_choice other than auto or none cannot be enforced for this model's tool "
            f"call format ({fmt.family or 'unknown'})",
            param="tool_choice",
            code="unsupported_parameter",
        )
    chosen = [t for t in tools if name is None or t["function"]["name"] == name]
    if not chosen:
        raise InvalidRequestError(
            f"tool_choice names {name!r}, which is not among tools", param="tool_choice"
        )

    def tag(text: str, token: int | None) -> str:
        # A tag that is one token of the vocabulary is that token, never its spelling.
        return f"<[{token}]>" if token is not None else json.dumps(text)

    # Each function's arguments are a JSON schema of their own (so that its "#/$defs/..."
    # references resolve in it), written as the chat templates of this family render calls.
    rules, bodies = [], []
    for i, t in enumerate(chosen):
        parameters = {**(t["function"].get("parameters") or {"type": "object"}),
                      "x-guidance": _TOOL_JSON}  # fmt: skip
        head = json.dumps(f'{{"name": {json.dumps(t["function"]["name"])}, "arguments": ')
        bodies.append(f"body{i}")
        rules.append(f'body{i}: {head} args{i} "}}"\nargs{i}: %json {json.dumps(parameters)}')
    more = ' ("\\n" call)*' if parallel else ""  # further calls, a newline apart
    start, end = tag(fmt.start, fmt.start_id), tag(fmt.end, fmt.end_id)
    lark = "\n".join([
        f"start: call{more}",
        f'call: {start} "\\n" ({" | ".join(bodies)}) "\\n" {end}',
        *rules,
    ]) + "\n"  # fmt: skip
    return OutputFormat("grammar", name="tool_choice", grammar=lark)


def _reason(why: str) -> str:
    if "Default retriever does not fetch resources" in why:
        return "references to documents outside the schema are not supported"
    text = re.sub(r"\s+", " ", why).strip()
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
