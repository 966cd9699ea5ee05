"""What a request asks of a text generator and what it gets back, and the interface of the
engines that generate text (``llm`` models).

These types are free of MLX, so routers, plugins and tests can use them without loading it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

#: Seeds are accepted in OpenAI's range (a signed 64-bit integer) and used modulo 2**64,
#: the range MLX's random keys take.
SEED_MIN = -(2**63)
SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of the generator (already checked and capped by the API)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) pairs
    #: Report each token's log probability and this many most likely alternatives (None:
    #: none; reading them costs only the requests that ask).
    logprobs: int | None = None


@dataclass(frozen=True)
class OutputFormat:
    """A form the answer must take, enforced while it is decoded (each token is chosen among
    those that keep the text valid): ``json_object`` is any JSON object, ``json_schema`` a
    JSON value valid against ``schema``, ``grammar`` text of an llguidance Lark ``grammar``
    (a forced tool call, say)."""

    type: Literal["json_object", "json_schema", "grammar"]
    schema: dict[str, Any] | None = None
    name: str | None = None  # the schema's name, for messages
    grammar: str | None = None

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema the answer follows."""
        return self.schema if self.schema is not None else {"type": "object"}


@dataclass(frozen=True)
class TextRequest:
    """One generation: the prompt's tokens, how to sample, and who asks for what.

    ``model`` is the name the service chose (a stand-in may serve it); ``service`` and
    ``capability`` say who asks and through which endpoint, for scheduling and accounting;
    ``format``, when set, is enforced while decoding (``InvalidRequestError`` naming what
    cannot be, before any text).
    """

    prompt: list[int]
    params: SamplingParams
    service: str
    model: str
    capability: Literal["chat", "completion"]
    format: OutputFormat | None = None  # None: free text


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token as the model chose it: its text, its log probability, and the most
    likely tokens at that step with theirs (most likely first)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ToolCall:
    """A function the model called: ``arguments`` is a JSON object's text, as OpenAI sends it;
    ``index`` is its place among the answer's calls."""

    id: str
    name: str
    arguments: str
    index: int = 0


@dataclass(frozen=True)
class ToolCallFormat:
    """How a model writes tool calls: each call's text between ``start`` and ``end`` (an
    empty ``end``: to the end of the answer), read by ``parse(text, tools)`` into a
    ``{"name", "arguments"}`` dict or a list of them (``ValueError`` when it cannot).
    ``family`` names mlx-lm's parser (``json_tools``, ``mistral``, ...); ``start_id`` and
    ``end_id`` are the tags' token ids where each is one token of the vocabulary."""

    start: str
    end: str
    parse: Callable[[str, list[dict[str, Any]] | None], Any]
    family: str = ""
    start_id: int | None = None
    end_id: int | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of generated text; the last one of a request has a ``finish_reason``.

    ``logprobs`` (when the request asked for them) are those of the tokens generated since the
    previous delta: text held back (a possible stop string) arrives later than its tokens'
    entries, and the end-of-sequence token has none.
    """

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    #: The model's thinking in this piece, apart from ``text`` (chat, for models that think).
    reasoning: str = ""
    #: Tool calls completed in this piece (chat with ``tools``).
    tool_calls: tuple[ToolCall, ...] = ()
    #: On the last delta: the stop string that ended the answer, when one did.
    stop_sequence: str | None = None


@runtime_checkable
class TextGenerator(Protocol):
    """What engines of ``llm`` models offer the API (and plugin routes)."""

    #: Most tokens of prompt plus answer the model takes (None: unknown).
    context_length: int | None
    #: The tags the model writes its thinking between (None: it does not think in tags).
    reasoning_tags: tuple[str, str] | None
    #: The options its chat template takes (``enable_thinking``, ``reasoning_effort``).
    template_options: frozenset[str]
    #: How it writes tool calls (None: its template renders no tools).
    tool_format: ToolCallFormat | None

    def chat_prompt(
        self, messages: list[dict[str, Any]], options: dict[str, Any] | None = None
    ) -> list[int]:
        """The prompt tokens for ``messages`` with the model's chat template (given
        ``options``, among ``template_options``, and ``tools`` when its ``tool_format`` is
        set), ready for the assistant's turn; ``InvalidRequestError`` when the template
        refuses them."""
        ...

    def decode(self, tokens: list[int]) -> str:
        """The text of ``tokens``."""
        ...

    def fill_in_middle(self, prefix: str, suffix: str) -> list[int] | None:
        """The prompt that has the model write what goes between ``prefix`` and ``suffix``
        (None: its tokenizer has no fill-in-the-middle tokens)."""
        ...

    def encode(self, text: str) -> list[int]:
        """Tokens of plain text (no template)."""
        ...

    def generate(self, request: TextRequest) -> AsyncIterator[Delta]:
        """The answer as it is generated; leaving the iteration early cancels it."""
        ...
