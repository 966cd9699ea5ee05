"""Request bodies of the OpenAI-compatible endpoints.

No field is silently ignored. Every OpenAI parameter is declared: implemented, accepted because
it cannot change an answer here (an end-user id, a cache-routing hint), or refused with a 400
naming it when a caller sets it (``Unsupported``); an unknown field is a 400 too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from mlx_host.errors import InvalidRequestError, MLXHostError
from mlx_host.generation import SEED_MAX, SEED_MIN, OutputFormat


def refuse_unless_neutral(*neutral: Any) -> AfterValidator:
    """A validator that accepts only None and the ``neutral`` values (those that ask for what
    this server does anyway); any other value is a 400 naming the field."""

    def check(value: Any) -> Any:
        if value is None or any(value == n and type(value) is type(n) for n in neutral):
            return value
        raise PydanticCustomError("unsupported", "not supported by this server")

    return AfterValidator(check)


#: An OpenAI parameter this server does not implement: a 400 naming it when set.
Unsupported = Annotated[Any, refuse_unless_neutral()]
#: Identifiers that OpenAI records and that cannot change an answer.
Identifier = Annotated[str | None, Field(max_length=256)]


class ContentPart(BaseModel):
    """One part of a multi-part message; only text parts are supported."""

    model_config = ConfigDict(extra="forbid")

    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    """The function an assistant message called: ``arguments`` is a JSON object's text."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    arguments: str


class ToolCallParam(BaseModel):
    """A tool call in an assistant message of the history."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionSpec(BaseModel):
    """A function the model may call: its name, what it does, and its parameters' schema."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: Annotated[bool | None, refuse_unless_neutral(False)] = Field(
        None, description="Arguments are not yet held to the schema while decoding: not true."
    )


class Tool(BaseModel):
    """One of ``tools``: a function."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    """The function a named ``tool_choice`` forces."""

    model_config = ConfigDict(extra="forbid")

    name: str


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming one function: the answer is a call to it."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: NamedFunction


class ChatMessage(BaseModel):
    """A message of the conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallParam] | None = Field(None, description="Assistant messages only.")
    tool_call_id: str | None = Field(
        None, max_length=128, description="Tool messages: the call they answer."
    )
    function_call: Unsupported = None
    refusal: Unsupported = None
    audio: Unsupported = None

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls belong to assistant messages")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("tool messages, and only they, need tool_call_id")
        return self

    def text(self) -> str:
        """The message's text; 400 for non-text parts such as images."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"Content parts of type {part.type!r} are not supported",
                    param="messages",
                    code="unsupported_content",
                )
        return "".join(part.text or "" for part in self.content)


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options``."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    include_obfuscation: Annotated[bool | None, refuse_unless_neutral(False)] = None


class JSONSchemaFormat(BaseModel):
    """``response_format.json_schema``: the schema every answer is held to."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = Field(
        None, description="What the answer is for: accepted (the schema itself is enforced)."
    )
    json_schema: dict[str, Any] = Field(alias="schema", description="A JSON Schema.")
    strict: bool | None = Field(
        None, description="Accepted; the schema is enforced while decoding either way."
    )


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: free text, any JSON object, or JSON valid against a
    schema, enforced while the answer is decoded."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type json_schema, and only then")
        return self

    def output_format(self) -> OutputFormat | None:
        """What the engine enforces (None: free text)."""
        if self.type == "text":
            return None
        if self.json_schema is None:
            return OutputFormat("json_object")
        spec = self.json_schema
        return OutputFormat("json_schema", spec.json_schema, spec.name)


class GenerationRequest(BaseModel):
    """What chat and text completion requests share: model choice and sampling."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description='Omitted or "default": the service default.')
    max_tokens: int | None = Field(None, ge=1, strict=True)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False, strict=True)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, strict=True)
    seed: int | None = Field(
        None,
        ge=SEED_MIN,
        le=SEED_MAX,
        strict=True,
        description="Makes sampling repeatable; a signed 64-bit integer, as OpenAI takes.",
    )
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = Field(1, description="Only one choice per request is supported.")
    response_format: ResponseFormat | None = Field(
        None, description="Default: the service's (text, or a JSON object)."
    )
    presence_penalty: float | None = Field(
        None, ge=-2, le=2, allow_inf_nan=False, description="Lowers (or raises) the logits of "
        "tokens already in the answer, once each."
    )  # fmt: skip
    frequency_penalty: float | None = Field(
        None, ge=-2, le=2, allow_inf_nan=False, description="Lowers (or raises) the logits of "
        "tokens already in the answer, by how often they occur."
    )  # fmt: skip
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100, allow_inf_nan=False)]] | None = (
        Field(None, max_length=300, description="Token id (as a string) to a bias added to its "
              "logit, -100 to 100.")
    )  # fmt: skip
    user: Identifier = Field(None, description="An end-user id: accepted, it changes nothing.")

    def logprobs_wanted(self) -> int | None:
        """How many alternatives to report beside each token's log probability (None: no
        log probabilities)."""
        return None

    def requested_max_tokens(self) -> int | None:
        """The caller's token limit, if any."""
        return self.max_tokens

    def max_tokens_field(self) -> str:
        """The field the caller's token limit came in."""
        return "max_tokens"

    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def stop_list(self) -> tuple[str, ...]:
        """``stop`` as a tuple (OpenAI allows up to four)."""
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4:
            raise InvalidRequestError("At most 4 stop sequences are allowed", param="stop")
        return tuple(stops)


class ChatCompletionRequest(GenerationRequest):
    """Body of ``POST /chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, strict=True)
    session_id: str | None = Field(
        None, description="Continue this server-side session (SDKs: extra_body)."
    )
    safety_identifier: Identifier = Field(None, description="Accepted: it changes nothing.")
    prompt_cache_key: Identifier = Field(
        None, description="Accepted: prompts are cached by their content, whoever sends them."
    )
    service_tier: Literal["auto", "default"] | None = Field(
        None, description="One tier here: auto and default are accepted."
    )
    store: Annotated[bool | None, refuse_unless_neutral(False)] = Field(
        None, description="Stored completions are not supported: false only."
    )
    modalities: Annotated[list[str] | None, refuse_unless_neutral(["text"])] = Field(
        None, description='Text only: ["text"].'
    )
    logprobs: bool | None = Field(
        None, description="Return each answer token's log probability (streamed too)."
    )
    top_logprobs: int | None = Field(
        None, ge=0, le=20, strict=True,
        description="With logprobs: this many most likely tokens at each position.",
    )  # fmt: skip
    tools: list[Tool] | None = Field(
        None, max_length=128, description="Functions the model may call, for models whose "
        "chat template renders tools (400 otherwise)."
    )  # fmt: skip
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="auto (the default with tools), none, required (the answer is tool "
        "calls only) or a named function (a call to it), the last two enforced while decoding "
        "for models whose calls are Hermes/Qwen JSON."
    )  # fmt: skip
    parallel_tool_calls: bool | None = Field(
        None, description="false: at most one call, enforced with a forced tool_choice (400 "
        "with auto, where it cannot be)."
    )  # fmt: skip
    functions: Unsupported = None
    function_call: Unsupported = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        Field(
            None,
            description="For models that think: passed to templates that take it; for templates "
            "with only an on/off switch (Qwen3), none and minimal turn thinking off, the other "
            "levels on. 400 for models without either.",
        )
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="Options for the model's chat template, among those it reads "
        "(enable_thinking, reasoning_effort); 400 naming any other."
    )  # fmt: skip
    keep_reasoning: bool = Field(
        False, description="mlx-host: with session_id, save the thinking with the answer "
        "(by default the session keeps the answer only)."
    )  # fmt: skip
    verbosity: Unsupported = None
    audio: Unsupported = None
    prediction: Unsupported = None
    web_search_options: Unsupported = None
    metadata: Unsupported = None
    moderation: Unsupported = None
    prompt_cache_retention: Unsupported = None
    prompt_cache_options: Unsupported = None

    def logprobs_wanted(self) -> int | None:
        """``top_logprobs`` when ``logprobs`` is true; 400 for alternatives without it."""
        if not self.logprobs:
            if self.top_logprobs:
                raise InvalidRequestError(
                    "top_logprobs needs logprobs set to true", param="top_logprobs"
                )
            return None
        return self.top_logprobs or 0

    @model_validator(mode="after")
    def _keep_reasoning_needs_a_session(self) -> ChatCompletionRequest:
        if self.keep_reasoning and self.session_id is None:
            raise ValueError("keep_reasoning applies to a session: send session_id with it")
        return self

    def forced_tool(self) -> tuple[bool, str | None]:
        """Whether ``tool_choice`` forces a call, and to which function (None: any of
        ``tools``); 400 for a forced choice without tools."""
        choice = self.tool_choice
        if choice in (None, "none", "auto"):
            return False, None
        if not self.tools:
            raise InvalidRequestError("tool_choice needs tools", param="tool_choice")
        return True, choice.function.name if isinstance(choice, NamedToolChoice) else None

    def requested_max_tokens(self) -> int | None:
        """``max_completion_tokens`` (the newer name) wins over ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def max_tokens_field(self) -> str:
        """The field the caller's token limit came in."""
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"


class CompletionRequest(GenerationRequest):
    """Body of ``POST /completions`` (legacy text completion: no chat template)."""

    prompt: str | list[str] = Field(description="The text to continue (one prompt only).")
    best_of: Annotated[int | None, refuse_unless_neutral(1)] = Field(
        None, description="One candidate per request: 1 only."
    )
    echo: Annotated[bool | None, refuse_unless_neutral(False)] = None
    suffix: str | None = Field(
        None, description="Fill in the middle: the completion goes between prompt and suffix, "
        "for models whose tokenizer has FIM tokens (400 otherwise)."
    )  # fmt: skip
    logprobs: int | None = Field(
        None, ge=0, le=5, strict=True,
        description="Return each token's log probability and this many most likely tokens.",
    )  # fmt: skip

    def logprobs_wanted(self) -> int | None:
        """``logprobs``: the alternatives to report (None: no log probabilities)."""
        return self.logprobs

    def prompt_text(self) -> str:
        """The single prompt; 400 for several, or for an empty one (unless a ``suffix`` makes
        it the empty start of a file to fill in)."""
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if len(prompts) != 1:
            raise InvalidRequestError("Only one prompt per request is supported", param="prompt")
        if not prompts[0] and not self.suffix:
            raise InvalidRequestError("The prompt is empty", param="prompt", code="empty_prompt")
        return prompts[0]


def translated_chat_request(fields: dict[str, Any], param: str) -> ChatCompletionRequest:
    """The chat request another API's request means (``fields`` that are None are left out);
    a 400 naming ``param`` for anything that API's own checks let through."""
    try:
        return ChatCompletionRequest.model_validate(
            {k: v for k, v in fields.items() if v is not None}
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise InvalidRequestError(f"{where}: {error['msg']}", param=param) from None


@contextmanager
def fields_renamed(names: dict[str, str]) -> Iterator[None]:
    """Errors raised inside name the fields of the API the caller used, not the chat
    request's it was translated into: ``param`` (by its first part) and the mentions of
    snake_case field names in the message are renamed by ``names``."""
    try:
        yield
    except MLXHostError as exc:
        if exc.param is not None:
            exc.param = names.get(exc.param.split(".")[0], exc.param)
        for chat, own in names.items():
            if "_" in chat:
                exc.message = re.sub(rf"\b{chat}\b", own, exc.message)
        raise
