"""Extraction: a text and a JSON schema in, JSON valid against the schema out.

``POST /api/v1/anydatanext/extract`` asks the service's chat model (with its data policy) to
extract what the schema describes from ``text``, holding the answer to the schema while it
is decoded. The answer is then validated with the reference validator (``jsonschema``, which
never fetches a referenced document): an answer cut by ``max_tokens``, or one that misses a
rule (the decoder's regular expressions are Rust's, the validator's Python's, and they differ
at the edges), is a 422 whose ``details`` list what is wrong, never a 200 with data that does
not fit.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from mlx_host import (
    Caller,
    ChatCompletionRequest,
    ChatMessage,
    ChatTurn,
    HostDep,
    InvalidRequestError,
    UnprocessableError,
    collect,
    usage,
)

router = APIRouter(prefix="/anydatanext", tags=["anydatanext"])

#: The largest text one extraction takes (characters); longer texts are split by the caller.
MAX_TEXT_CHARS = 100_000
#: How many validation errors a 422 lists.
MAX_DETAILS = 20
DEFAULT_INSTRUCTIONS = "Extract the data that the JSON schema describes from the text."


class ExtractionRequest(BaseModel):
    """Body of ``POST /api/v1/anydatanext/extract``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="The source text.")
    json_schema: dict[str, Any] = Field(
        alias="schema", description="A JSON Schema the extracted data must satisfy."
    )
    instructions: str | None = Field(
        None, max_length=4000, description="What to extract, in words (default: as the schema)."
    )
    model: str = Field("default", description='A chat model, or "default".')
    max_tokens: int | None = Field(
        None, gt=0, description="Most tokens of JSON to generate; default: the service's."
    )


@router.post(
    "/extract",
    responses={422: {"description": "The model's answer does not satisfy the schema"}},
)
async def extract(
    body: ExtractionRequest, caller: Caller, host: HostDep, request: Request
) -> dict[str, Any]:
    """Extract data valid against ``schema`` from ``text``: ``data`` is the validated JSON.

    422 (``code``: ``schema_not_satisfied``, with ``details``) when the model's answer does not
    satisfy the schema within ``max_tokens``; 400 when the schema is not valid JSON Schema or
    uses what the decoder cannot enforce.
    """
    validator = _validator(body.json_schema)
    prompt = (
        f"{body.instructions or DEFAULT_INSTRUCTIONS}\n\n"
        f"JSON schema:\n{json.dumps(body.json_schema)}\n\nText:\n{body.text}"
    )
    chat = ChatCompletionRequest(
        model=body.model,
        messages=[ChatMessage(role="user", content=prompt)],
        max_tokens=body.max_tokens,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "extraction", "schema": body.json_schema, "strict": True},
        },
    )
    turn = await ChatTurn.prepare(host, caller.spec, chat)
    try:
        text, last = await collect(turn.generate(), request)
    except InvalidRequestError as exc:
        if exc.param != "response_format":
            raise
        # The engine's grammar cannot enforce the schema: say so of this endpoint's field.
        why = exc.message.partition("cannot be enforced: ")[2]
        raise InvalidRequestError(
            f"schema cannot be enforced while decoding: {why}", param="schema", code=exc.code
        ) from None
    # Caller-supplied patterns run in the validator: off the event loop.
    data, problems = await asyncio.to_thread(_check, validator, text)
    if problems:
        if last.finish_reason == "length":
            why = f"the answer was cut by max_tokens after {last.completion_tokens} tokens"
        elif data is _NOT_JSON:
            why = "the answer is not JSON"
        else:
            why = f"the answer breaks {len(problems)} rule(s) of the schema"
        raise UnprocessableError(
            f"The model could not satisfy the schema: {why}",
            code="schema_not_satisfied",
            details=problems[:MAX_DETAILS],
        )
    return {
        "object": "extraction",
        "model": turn.model.name,  # the model that answered (a stand-in, maybe), as chat says
        "data": data,
        "usage": usage(last),
    }


_NOT_JSON = object()


def _validator(schema: dict[str, Any]) -> Any:
    """A validator of ``schema`` that never fetches anything (a ``$ref`` to a URL or a file
    is unresolvable, not retrieved); 400 when the schema is not a valid JSON Schema."""
    if not isinstance(schema.get("$schema", ""), str):
        raise InvalidRequestError("schema's $schema must be a URI string", param="schema")
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequestError(
            f"schema is not a valid JSON Schema: {_short(exc.message)}", param="schema"
        ) from None
    return cls(schema, registry=referencing.Registry(), format_checker=cls.FORMAT_CHECKER)


def _check(validator: Any, text: str) -> tuple[Any, list[dict[str, str]]]:
    """The answer's data and what is wrong with it (nothing: it satisfies the schema)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return _NOT_JSON, [{"path": "$", "message": _short(str(exc))}]
    try:
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    except referencing.exceptions.Unresolvable:
        raise InvalidRequestError(
            "schema refers to a document outside itself; only local references work",
            param="schema",
        ) from None
    return data, [{"path": e.json_path, "message": _short(e.message)} for e in errors]


def _short(message: str) -> str:
    """One line of at most 300 characters (a validator's message repeats the value)."""
    line = " ".join(message.split())
    return line if len(line) <= 300 else line[:299] + "…"
