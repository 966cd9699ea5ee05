"""The body of ``POST /responses`` (OpenAI's Responses API), and its translation into the chat
request that every text answer is made from.

As for chat, no field is silently ignored: each is implemented, accepted because it cannot
change an answer here, or refused with a 400 naming it (``Unsupported``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from mlx_host.api.schemas import (
    ChatCompletionRequest,
    Identifier,
    Unsupported,
    refuse_unless_neutral,
    translated_chat_request,
)
from mlx_host.errors import InvalidRequestError

TEXT_PARTS = ("input_text", "output_text")
#: The chat request's fields as this API names them, for errors raised on the chat path.
FIELD_NAMES = {
    "max_completion_tokens": "max_output_tokens",
    "messages": "input",
    "session_id": "previous_response_id",
    "reasoning_effort": "reasoning.effort",
    "response_format": "text.format",
    "logprobs": "include",
}
#: ``include`` values: the answer's log probabilities; the thinking as an opaque string.
INCLUDE_LOGPROBS = "message.output_text.logprobs"
INCLUDE_REASONING = "reasoning.encrypted_content"


class InputContent(BaseModel):
    """A part of a message's content: text (``input_text``, or ``output_text`` in an earlier
    answer passed back); images, files and audio are refused."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_only(self) -> InputContent:
        if self.type not in (*TEXT_PARTS, "refusal"):
            raise InvalidRequestError(
                f"Content parts of type {self.type!r} are not supported",
                param="input",
                code="unsupported_content",
            )
        # An earlier answer passed back carries its annotations and log probabilities.
        unknown = set(self.model_extra or {}) - {"annotations", "logprobs", "refusal"}
        if unknown or (self.type in TEXT_PARTS and self.text is None):
            raise ValueError(f"a {self.type} part has text (and no {sorted(unknown)})")
        return self

    def value(self) -> str:
        """The part's text (a refusal's words)."""
        return self.text or str((self.model_extra or {}).get("refusal") or "")


class MessageItem(BaseModel):
    """A message: the user's, the system's or developer's instructions, or an earlier answer."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputContent]
    id: str | None = None
    status: str | None = None
    phase: str | None = Field(
        None, description="An earlier answer's phase (commentary, final answer): accepted."
    )

    def text(self) -> str:
        """The message's text."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.value() for part in self.content)


class FunctionCallItem(BaseModel):
    """A function call of an earlier answer."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=128)
    arguments: str
    id: str | None = None
    status: str | None = None
    caller: Unsupported = None
    namespace: Unsupported = None
    async_: Unsupported = Field(None, alias="async")


class FunctionCallOutputItem(BaseModel):
    """What a function call returned."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=128)
    output: str | list[InputContent]
    id: str | None = None
    status: str | None = None
    name: str | None = Field(None, description="The function's name: accepted.")
    caller: Unsupported = None
    namespace: Unsupported = None

    def text(self) -> str:
        """The output's text."""
        if isinstance(self.output, str):
            return self.output
        return "".join(part.value() for part in self.output)


class ReasoningItem(BaseModel):
    """The thinking of an earlier answer, passed back: accepted, and not shown to the model
    again (chat templates drop earlier turns' thinking)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[Any] = Field(default_factory=list)
    content: list[Any] | None = None
    encrypted_content: str | None = None
    status: str | None = None


def _item_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "message"))
    return str(getattr(value, "type", "message"))


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_type),
]


class FunctionTool(BaseModel):
    """A function the model may call."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: Annotated[bool | None, refuse_unless_neutral(False)] = Field(
        None, description="Arguments are not yet held to the schema while decoding: not true."
    )


class NamedFunctionChoice(BaseModel):
    """``tool_choice`` naming one function: the answer is a call to it."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    """``text.format``: free text, any JSON object, or JSON valid against a schema (enforced
    while decoding)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = Field(None, description="Accepted: the schema is enforced either way.")

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> TextFormat:
        if (self.type == "json_schema") != (self.json_schema is not None and bool(self.name)):
            raise ValueError("name and schema are required with type json_schema, and only then")
        return self

    def response_format(self) -> dict[str, Any]:
        """Chat's ``response_format`` for the same form."""
        if self.type != "json_schema":
            return {"type": self.type}
        spec = {"name": self.name, "schema": self.json_schema, "description": self.description,
                "strict": self.strict}  # fmt: skip
        return {"type": "json_schema", "json_schema": spec}


class ResponseStreamOptions(BaseModel):
    """``stream_options`` of the Responses API (the usage always comes, in the last event)."""

    model_config = ConfigDict(extra="forbid")

    include_obfuscation: Annotated[bool | None, refuse_unless_neutral(False)] = None


class TextOptions(BaseModel):
    """``text``: the answer's form."""

    model_config = ConfigDict(extra="forbid")

    format: TextFormat | None = None
    verbosity: Annotated[str | None, refuse_unless_neutral("medium")] = Field(
        None, description="medium only."
    )


class ReasoningOptions(BaseModel):
    """``reasoning``: how much a model that thinks should."""

    model_config = ConfigDict(extra="forbid")

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Annotated[str | None, refuse_unless_neutral("auto")] = Field(
        None, description="auto only: the thinking comes whole, as reasoning text, not summed up."
    )
    generate_summary: Annotated[str | None, refuse_unless_neutral("auto")] = None


class ResponseCreateRequest(BaseModel):
    """Body of ``POST /responses``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description='Omitted or "default": the service default.')
    input: str | list[InputItem] = Field(
        description="The user's text, or items: messages, function calls and their outputs."
    )
    instructions: str | None = Field(
        None, description="A system message for this request (not carried to continuations)."
    )
    previous_response_id: str | None = Field(
        None, description="Continue this stored response of the caller's service."
    )
    store: bool = Field(True, description="Keep the response for GET and continuations.")
    max_output_tokens: int | None = Field(None, ge=1, strict=True)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False, strict=True)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, strict=True)
    stream: bool = False
    stream_options: ResponseStreamOptions | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    reasoning: ReasoningOptions | None = None
    include: list[Literal["message.output_text.logprobs", "reasoning.encrypted_content"]] | None = (
        Field(None, description="Log probabilities of the answer's tokens; the thinking as "
              "encrypted_content (base64, not encrypted).")
    )  # fmt: skip
    top_logprobs: int | None = Field(None, ge=0, le=20, strict=True)
    truncation: Literal["auto", "disabled"] | None = Field(
        None, description="auto: drop the oldest history that does not fit; disabled (the "
        "default): 413."
    )  # fmt: skip
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16, description="Kept with the response."
    )
    user: Identifier = Field(None, description="Accepted: it changes nothing.")
    safety_identifier: Identifier = Field(None, description="Accepted: it changes nothing.")
    prompt_cache_key: Identifier = Field(
        None, description="Accepted: prompts are cached by their content, whoever sends them."
    )
    service_tier: Literal["auto", "default"] | None = None
    background: Annotated[bool | None, refuse_unless_neutral(False)] = None
    max_tool_calls: Unsupported = None
    conversation: Unsupported = None
    prompt: Unsupported = None
    prompt_cache_retention: Unsupported = None
    prompt_cache_options: Unsupported = None
    context_management: Unsupported = None
    moderation: Unsupported = None
    image: Unsupported = None
    access_programs: Unsupported = None
    background_options: Unsupported = None

    @model_validator(mode="after")
    def _input_is_not_empty(self) -> ResponseCreateRequest:
        if not self.input:
            raise ValueError("input is empty")
        return self

    def chat_request(self) -> ChatCompletionRequest:
        """The same request as a chat completion (answered whole: streaming is this API's)."""
        include = self.include or []
        if self.top_logprobs and INCLUDE_LOGPROBS not in include:
            raise InvalidRequestError(
                f"top_logprobs needs include {INCLUDE_LOGPROBS!r}", param="top_logprobs"
            )
        choice = self.tool_choice
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages(),
            "max_completion_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "tools": [
                {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
                for t in self.tools or []
            ] or None,
            "tool_choice": (
                {"type": "function", "function": {"name": choice.name}}
                if isinstance(choice, NamedFunctionChoice) else choice
            ),
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": self.text.format.response_format()
            if self.text and self.text.format else None,
            "reasoning_effort": self.reasoning.effort if self.reasoning else None,
            "logprobs": INCLUDE_LOGPROBS in include or None,
            "top_logprobs": self.top_logprobs,
        }  # fmt: skip
        return translated_chat_request(body, "input")

    def messages(self) -> list[dict[str, Any]]:
        """The input as chat messages (the instructions go apart, ahead of any history): a
        call and the answer text before it make one assistant message; reasoning items are
        left out."""
        out: list[dict[str, Any]] = []
        items = [MessageItem(role="user", content=self.input)] if isinstance(
            self.input, str) else self.input  # fmt: skip
        for item in items:
            if isinstance(item, MessageItem):
                out.append({"role": item.role, "content": item.text()})
            elif isinstance(item, FunctionCallItem):
                call = {"id": item.call_id, "type": "function",
                        "function": {"name": item.name, "arguments": item.arguments}}  # fmt: skip
                last = out[-1] if out else None
                if last is None or last["role"] != "assistant":
                    last = {"role": "assistant", "content": None}
                    out.append(last)
                last.setdefault("tool_calls", []).append(call)
            elif isinstance(item, FunctionCallOutputItem):
                out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text()})
        return out
