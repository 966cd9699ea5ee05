"""The bodies of ``POST /messages`` and ``POST /messages/count_tokens`` (Anthropic's Messages
API), and their translation into the chat request that every text answer is made from.

As for chat, no field is silently ignored: each is implemented, accepted because it cannot
change an answer here (``cache_control``: prompts are cached by their content anyway), or
refused with a 400 naming it (``Unsupported``).
"""

from __future__ import annotations

import json
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
    Unsupported,
    refuse_unless_neutral,
    translated_chat_request,
)
from mlx_host.errors import InvalidRequestError

_BLOCK_TYPES = ("text", "tool_use", "tool_result", "thinking", "redacted_thinking")
#: The chat request's fields as this API names them, for errors raised on the chat path.
FIELD_NAMES = {
    "max_completion_tokens": "max_tokens",
    "session_id": "messages",
    "stop": "stop_sequences",
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
    "reasoning_effort": "thinking",
    "response_format": "output_config.format",
}


class CacheControl(BaseModel):
    """A prompt-caching breakpoint: accepted (every prompt prefix is cached by content)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(BaseModel):
    """Text."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: Unsupported = None


class ToolUseBlock(BaseModel):
    """A tool call of an earlier answer."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=128)
    input: dict[str, Any]
    cache_control: CacheControl | None = None
    caller: Unsupported = None
    toolset_name: Unsupported = None


class ToolResultBlock(BaseModel):
    """What a tool call returned (``is_error``: the text says it failed)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=128)
    content: str | list[TextBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None
    toolset_name: Unsupported = None

    def text(self) -> str:
        """The result as the model reads it."""
        content = self.content or ""
        text = content if isinstance(content, str) else "".join(b.text for b in content)
        return f"Error: {text}" if self.is_error else text


class ThinkingBlock(BaseModel):
    """The thinking of an earlier answer: accepted, and not shown to the model again (chat
    templates drop earlier turns' thinking)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(BaseModel):
    """Redacted thinking of an earlier answer: accepted and left out, as ``thinking`` is."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["redacted_thinking"]
    data: str


class OtherBlock(BaseModel):
    """A block this server does not read (images, documents, server tools): a 400."""

    model_config = ConfigDict(extra="allow")

    type: str

    @model_validator(mode="after")
    def _refused(self) -> OtherBlock:
        raise InvalidRequestError(
            f"Content blocks of type {self.type!r} are not supported",
            param="messages",
            code="unsupported_content",
        )


def _block_type(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in _BLOCK_TYPES else "other"


Block = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[OtherBlock, Tag("other")],
    Discriminator(_block_type),
]


class InputMessage(BaseModel):
    """A turn of the conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolSpec(BaseModel):
    """A tool the model may call (a client tool: Anthropic's server tools are refused)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None
    strict: Annotated[bool | None, refuse_unless_neutral(False)] = Field(
        None, description="Inputs are not yet held to the schema while decoding: not true."
    )
    allowed_callers: Unsupported = None
    defer_loading: Unsupported = None
    eager_input_streaming: Unsupported = None
    input_examples: Unsupported = None


class ToolChoice(BaseModel):
    """How the model uses the tools: ``auto``, ``any`` (a call is required), ``tool`` (a call
    to ``name``) or ``none``; the forced ones are held while decoding for models whose calls
    are Hermes/Qwen JSON."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _name_iff_tool(self) -> ToolChoice:
        if (self.type == "tool") != (self.name is not None):
            raise ValueError("name is required with type tool, and only then")
        return self


class ThinkingConfig(BaseModel):
    """Whether a model that thinks should (``enabled`` or ``adaptive``: on; ``disabled``:
    off, where its template has a switch). Thinking counts toward ``max_tokens``;
    ``budget_tokens`` is checked as Anthropic checks it but does not cut the thinking short."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=1024, strict=True)
    display: Literal["summarized", "omitted"] | None = Field(
        None, description="omitted: thinking blocks come without their text."
    )

    @model_validator(mode="after")
    def _budget_iff_enabled(self) -> ThinkingConfig:
        if (self.type == "enabled") != (self.budget_tokens is not None):
            raise ValueError("budget_tokens is required with type enabled, and only then")
        return self


class JSONOutputFormat(BaseModel):
    """An answer that is JSON valid against ``schema`` (enforced while decoding)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(BaseModel):
    """``output_config``: effort (for models that think) and the answer's format."""

    model_config = ConfigDict(extra="forbid")

    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JSONOutputFormat | None = None


class Metadata(BaseModel):
    """``metadata``: an end-user id, accepted (it changes nothing)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, max_length=256)


class MessagesPrompt(BaseModel):
    """What a Messages request's prompt is made of (the body of ``count_tokens``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description='A model the service allows, or "default".')
    messages: list[InputMessage] = Field(
        min_length=1, description="Ending with a user turn (a prefilled assistant turn is refused)."
    )
    system: str | list[TextBlock] | None = None
    tools: list[ToolSpec] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    cache_control: CacheControl | None = None
    container: Unsupported = None
    mcp_servers: Unsupported = None
    context_management: Unsupported = None
    diagnostics: Unsupported = None
    inference_geo: Unsupported = None
    speed: Unsupported = None
    user_profile_id: Unsupported = None
    workspace_id: Unsupported = None

    @model_validator(mode="after")
    def _no_prefill(self) -> MessagesPrompt:
        if self.messages[-1].role == "assistant":
            raise InvalidRequestError(
                "A final assistant message (prefill) is not supported: end with a user turn",
                param="messages",
                code="unsupported_parameter",
            )
        return self

    def chat_request(self, **sampling: Any) -> ChatCompletionRequest:
        """The same request as a chat completion, with ``sampling`` fields (answered whole:
        streaming is this API's)."""
        body: dict[str, Any] = {"model": self.model, "messages": self.chat_messages(), **sampling}
        if self.tools:
            body["tools"] = [
                {"type": "function", "function": {"name": t.name, "description": t.description,
                                                  "parameters": t.input_schema}}
                for t in self.tools
            ]  # fmt: skip
        if (choice := self.tool_choice) is not None:
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}} if choice.type == "tool"
                else {"auto": "auto", "any": "required", "none": "none"}[choice.type]
            )  # fmt: skip
            if choice.disable_parallel_tool_use and choice.type != "none":
                body["parallel_tool_calls"] = False
        effort: str | None = self.output_config.effort if self.output_config else None
        if self.thinking is not None:
            effort = "none" if self.thinking.type == "disabled" else effort or "high"
        body["reasoning_effort"] = effort
        if self.output_config and self.output_config.format:
            schema = self.output_config.format.json_schema
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema},
            }
        return translated_chat_request(body, "messages")

    def chat_messages(self) -> list[dict[str, Any]]:
        """The system prompt and messages as chat messages: a user turn's tool results become
        tool messages before its text, an assistant turn's tool uses its tool calls, and
        thinking is left out."""
        out: list[dict[str, Any]] = []
        if self.system:
            system = self.system
            text = system if isinstance(system, str) else "".join(b.text for b in system)
            out.append({"role": "system", "content": text})
        for message in self.messages:
            blocks = message.content
            if isinstance(blocks, str):
                out.append({"role": message.role, "content": blocks})
                continue
            text = "".join(b.text for b in blocks if isinstance(b, TextBlock))
            if message.role == "assistant":
                calls = [
                    {"id": b.id, "type": "function",
                     "function": {"name": b.name, "arguments": json.dumps(b.input)}}
                    for b in blocks if isinstance(b, ToolUseBlock)
                ]  # fmt: skip
                out.append(
                    {
                        "role": "assistant",
                        "content": text,
                        **({"tool_calls": calls} if calls else {}),
                    }
                )
                continue
            out += [{"role": "tool", "tool_call_id": b.tool_use_id, "content": b.text()}
                    for b in blocks if isinstance(b, ToolResultBlock)]  # fmt: skip
            if text or not any(isinstance(b, ToolResultBlock) for b in blocks):
                out.append({"role": "user", "content": text})
        return out


class MessagesRequest(MessagesPrompt):
    """Body of ``POST /messages``."""

    max_tokens: int = Field(ge=1, strict=True)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = Field(None, max_length=4)
    temperature: float | None = Field(None, ge=0, le=1, allow_inf_nan=False, strict=True)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, strict=True)
    top_k: Unsupported = None
    stream: bool = False
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = Field(
        None, description="One tier here: both are accepted."
    )

    @model_validator(mode="after")
    def _budget_below_max_tokens(self) -> MessagesRequest:
        budget = self.thinking.budget_tokens if self.thinking else None
        if budget is not None and budget >= self.max_tokens:
            raise ValueError("thinking.budget_tokens must be less than max_tokens")
        return self

    def chat(self) -> ChatCompletionRequest:
        """The chat request this one means."""
        return self.chat_request(
            max_tokens=self.max_tokens,
            stop=self.stop_sequences,
            temperature=self.temperature,
            top_p=self.top_p,
            user=self.metadata.user_id if self.metadata else None,
        )
