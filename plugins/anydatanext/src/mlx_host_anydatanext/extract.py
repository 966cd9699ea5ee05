"""Extraction: a text and a JSON schema in, JSON valid against the schema out.

``POST /api/v1/anydatanext/extract`` asks the service's chat model (with its data policy) to
extract what the schema describes from ``text``, holding the answer to the schema while it
is decoded. The answer is then validated with the reference validator (``jsonschema``): an
answer cut by ``max_tokens``, or one that misses a rule the decoder cannot enforce (a
``format``, say), is a 422 whose ``details`` list what is wrong, never a 200 with data that
does not fit.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
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
    try:
        jsonschema.validators.validator_for(body.json_schema).check_schema(body.json_schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequestError(
            f"schema is not a valid JSON Schema: {exc.message}", param="schema"
        ) from None
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
    text, last = await collect(turn.generate(), request)
    if last.finish_reason == "length":
        raise _unsatisfied(
            "the answer was cut by max_tokens before it was complete",
            [{"path": "$", "message": f"cut after {last.completion_tokens} tokens"}],
        )
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _unsatisfied("the answer is not JSON", [{"path": "$", "message": str(exc)}]) from None
    validator = jsonschema.validators.validator_for(body.json_schema)(
        body.json_schema, format_checker=jsonschema.FormatChecker()
    )
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        details = [{"path": e.json_path, "message": e.message} for e in errors[:MAX_DETAILS]]
        raise _unsatisfied(f"the answer breaks {len(errors)} rule(s) of the schema", details)
    return {
        "object": "extraction",
        "model": turn.call.model_name,
        "data": data,
        "usage": usage(last),
    }


def _unsatisfied(why: str, details: list[dict[str, str]]) -> UnprocessableError:
    return UnprocessableError(
        f"The model could not satisfy the schema: {why}",
        code="schema_not_satisfied",
        details=details,
    )
