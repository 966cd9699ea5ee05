"""A response format as an llguidance grammar, checked before anything is generated: every
keyword of the schema is enforced while decoding, or the request is refused with a 400 that
says which (never an answer decoded without a rule the caller asked for).

MLX-free, so the real engine and the fake one refuse the same schemas.
"""

from __future__ import annotations

import re
from typing import Any

import llguidance

from mlx_host.errors import InvalidRequestError
from mlx_host.generation import OutputFormat

#: Options fixed here, whatever the schema says: a schema's own ``x-guidance`` could make
#: llguidance lenient (unsupported keywords become warnings, and go unenforced). No optional
#: whitespace: small models given the choice pad JSON with newlines until max_tokens runs out.
_OPTIONS: Any = {"lenient": False, "coerce_one_of": False, "whitespace_flexible": False}
#: Longest reason quoted back to the caller.
_MAX_REASON = 300


def compile_format(fmt: OutputFormat) -> str:
    """The grammar that holds answers to ``fmt``; 400 naming what cannot be enforced."""
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            fmt.json_schema(), overrides=_OPTIONS
        )
    except (ValueError, TypeError) as exc:
        raise bad_schema(fmt, str(exc)) from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error or messages:  # a warning is a rule that would not be enforced
        raise bad_schema(fmt, messages[0] if messages else "it is not valid")
    return grammar


def bad_schema(fmt: OutputFormat, why: str) -> InvalidRequestError:
    """The 400 for a format that cannot be enforced, with llguidance's reason on one line."""
    name = f" {fmt.name!r}" if fmt.name else ""
    return InvalidRequestError(
        f"response_format: the JSON schema{name} cannot be enforced: {_reason(why)}",
        param="response_format",
        code="unsupported_schema",
    )


def _reason(why: str) -> str:
    if "Default retriever does not fetch resources" in why:
        return "references to documents outside the schema are not supported"
    text = re.sub(r"\s+", " ", why).strip()
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
