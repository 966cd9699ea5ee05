"""A decoding step of mlx-lm's continuous batch without the work no row needs.

mlx-lm's ``GenerationBatch._step`` normalizes every row's logits into log-probabilities (a
log-sum-exp over the whole vocabulary) and slices them into one array per row, at every step,
for samplers and callers that read them. Greedy rows, and rows sampled by temperature alone,
choose the same tokens from the raw logits (the arg-max and the categorical distribution do not
change when a row is shifted by a constant). Only rows that report log-probabilities, or whose
top-p cut reads probabilities, need them; while none of the batch's rows does, the step skips
both (docs/engine.md has the figures).

A batch of one greedy row decodes speculatively: tokens looked up in its own sequence
(``prompt_lookup.py``) are checked in one wider forward pass, and every one the model agrees
with is emitted at once. The tokens are those greedy decoding chooses one at a time, up to the
rounding of a wider matrix product (as in prefill).

New rows join the batch without waiting: on the CPU their first tokens go out in the step that
chooses them, and a merged cache of cached prompts is made with room for the tokens its rows
will add, instead of being reallocated at the next token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, GenerationBatch, PromptProcessingBatch
from mlx_lm.models.cache import BatchKVCache
from mlx_lm.sample_utils import greedy_sampler

from mlx_host.engine.prompt_lookup import PromptLookup

#: The most draft tokens one speculative pass checks. A pass of 9 positions costs about 1.6
#: one-position passes on the 2-core CPU and less on a GPU; a longer draft rarely survives.
DRAFT_TOKENS = 8
#: After drafts the model rejects whole, the row drafts nothing for 1, 2, 4 ... up to
#: ``MAX_PAUSE`` steps (doubling with each miss in a row), so text that repeats its n-grams
#: without copying them does not pay for a wide pass at every step.
MAX_PAUSE = 16


@dataclass
class DraftStats:
    """Speculative decoding on a model since it loaded (read by ``/metrics``): draft tokens
    the model agreed with and that were emitted, and draft tokens it did not agree with."""

    accepted: int = 0
    rejected: int = 0


class LeanGenerationBatch(GenerationBatch):
    """mlx-lm's generation batch, stepping without log-probabilities while no row in it is
    ``normalized`` (a predicate on uids, the scheduler's), and speculatively while it is one
    greedy row."""

    normalized: Callable[[int], bool]
    drafts: DraftStats
    #: Hand new rows' first tokens out as they join (``first_tokens``).
    first_tokens_at_once = False
    _row: _Speculation | None = None  # the lone row's n-grams and misses

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._joined: list[tuple[list[int], mx.array, list[Any]]] = []  # see extend
        self._sent: set[int] = set()  # rows whose current token went out as they joined
        super().__init__(*args, **kwargs)

    def extend(self, batch: GenerationBatch) -> None:
        """Take in newly prefilled rows (mlx-lm's), noting their first tokens, which mlx-lm's
        prefill has just chosen, for ``first_tokens``."""
        new: Any = batch
        super().extend(batch)
        if self.first_tokens_at_once:
            self._joined.append((list(new.uids), new._next_tokens, list(new._next_logprobs)))

    def first_tokens(self) -> list[GenerationBatch.Response]:
        """The first tokens of the rows that joined since the last call, now rather than with
        the batch's next step. mlx-lm hands a row's first token out after it has launched the
        step that puts it in the KV cache; on the CPU, launching a step runs most of it, so
        every new row's first token waited a whole step of the batch (docs/engine.md). A row
        that its first token finishes leaves the batch with its cache."""
        b: Any = self
        responses, done = [], []
        for uids, tokens, logprobs in self._joined:
            chosen = cast(list[int], tokens.tolist())
            for uid, token, logprob in zip(uids, chosen, logprobs, strict=True):
                i = b.uids.index(uid)  # extend and this call run in one step: all are there
                finish = self._count(i, token)
                cache, context = None, None
                if finish is not None:
                    cache, context = self.extract_cache(i), b.tokens[i]
                    done.append(i)
                else:
                    self._sent.add(uid)
                responses.append(b.Response(uid, token, logprob, finish, cache, context))
        self._joined = []
        if done:
            self.filter([i for i in range(len(b.uids)) if i not in done])
        return responses

    def _count(self, i: int, token: int) -> str | None:
        """Count row ``i``'s new ``token``: why the row finishes with it, or None."""
        b: Any = self
        b._num_tokens[i] += 1
        finish = "length" if b._num_tokens[i] >= b.max_tokens[i] else None
        if b._matchers[i].advance(token):
            finish = "stop"
        return finish

    def next(self) -> list[GenerationBatch.Response]:
        """One step: a token for every row, or several for a lone greedy row whose sequence
        predicts its next tokens; none for a row whose token went out as it joined
        (``first_tokens``), whose first step only puts that token in the KV cache."""
        b: Any = self
        sent, self._sent = self._sent, set()
        # A row's first token goes out alone: checking a draft first would add a wider pass
        # to the time to first token.
        lone = len(b.uids) == 1 and b._num_tokens[0] > 0 and b.uids[0] not in sent
        if lone and self._speculable():
            return self._speculative_next()
        return self._plain_next(sent)

    def _plain_next(self, sent: set[int]) -> list[GenerationBatch.Response]:
        """mlx-lm's step (``GenerationBatch.next``), giving the rows in ``sent`` no response."""
        b: Any = self
        if not b.uids:
            return []
        tokens, logprobs = self._step()
        responses, keep = [], []
        for i, uid in enumerate(b.uids):
            if uid in sent:
                keep.append(i)
                continue
            finish = self._count(i, tokens[i])
            if finish is None:
                keep.append(i)
                responses.append(b.Response(uid, tokens[i], logprobs[i], None, None, None))
            else:
                cache = self.extract_cache(i)
                responses.append(
                    b.Response(uid, tokens[i], logprobs[i], finish, cache, b.tokens[i])
                )
        if len(keep) < len(b.uids):
            self.filter(keep)
        return responses

    def _speculable(self) -> bool:
        b: Any = self
        return (
            _greedy(b.samplers[0])
            and not (b.logits_processors and b.logits_processors[0])
            and not self.normalized(b.uids[0])
            # Trimmed the same way as filled; a sliding window's rotating cache would keep a
            # rejected draft that carried it past the window's edge.
            and all(type(c) is BatchKVCache for c in b.prompt_cache)
        )

    def _speculative_next(self) -> list[GenerationBatch.Response]:
        b: Any = self
        uid, tokens = b.uids[0], b.tokens[0]
        if self._row is None or self._row.uid != uid:
            self._row = _Speculation(uid)
        row = self._row
        if row.pause:
            row.pause -= 1
            return self._plain_next(set())
        lookup = row.lookup
        lookup.extend(tokens[len(lookup) :])
        token = int(b._next_tokens.item())  # this step's token, not yet in the KV cache
        lookup.extend([token])
        draft = lookup.draft(min(DRAFT_TOKENS, b.max_tokens[0] - b._num_tokens[0] - 1))
        if not draft:
            return self._plain_next(set())  # the one-token step (its token is in the lookup)
        inputs = mx.array([[token, *draft]], dtype=b._next_tokens.dtype)
        logits = b.model(inputs, cache=b.prompt_cache)
        predicted = cast(list[int], mx.argmax(logits[0], axis=-1).tolist())
        accepted = 0
        while accepted < len(draft) and draft[accepted] == predicted[accepted]:
            accepted += 1
        self.drafts.rejected += len(draft) - accepted
        row.missed(accepted == 0)
        emitted = [token, *draft[:accepted]]
        responses = []
        for i, t in enumerate(emitted):
            if (finish := self._count(0, t)) is not None:
                self.drafts.accepted += i  # the draft tokens emitted
                # The KV cache must hold exactly the tokens handed back with it.
                self._trim(len(draft) - i)
                tokens.extend(emitted[: i + 1])
                cache = self.extract_cache(0)
                responses.append(b.Response(uid, t, None, finish, cache, tokens))
                self.filter([])
                return responses
            responses.append(b.Response(uid, t, None, None, None, None))
        self.drafts.accepted += accepted
        self._trim(len(draft) - accepted)
        tokens.extend(emitted)
        lookup.extend(emitted[1:])
        b._current_tokens = mx.array(emitted[-1:], dtype=inputs.dtype)
        b._current_logprobs = [None]
        b._next_tokens = mx.array(predicted[accepted : accepted + 1], dtype=inputs.dtype)
        b._next_logprobs = [None]
        return responses

    def filter(self, keep: list[int]) -> None:
        """Keep only the rows at ``keep`` (mlx-lm's), forgetting a departed row's n-grams."""
        super().filter(keep)
        if self._row is not None and self._row.uid not in self.uids:
            self._row = None

    def _trim(self, n: int) -> None:
        """Drop the last ``n`` positions (rejected draft tokens) from the KV cache."""
        if n:
            for c in self.prompt_cache:
                c.trim(n)

    def _step(self) -> tuple[list[int], list[Any]]:
        if any(self.normalized(uid) for uid in self.uids):
            return super()._step()
        # mlx-lm's attributes are typed by their first values (None), not by what they hold.
        b: Any = self
        b._current_tokens = b._next_tokens
        b._current_logprobs = b._next_logprobs
        inputs = b._current_tokens
        logits = b.model(inputs[:, None], cache=b.prompt_cache)[:, -1, :]
        # Logits processors (penalties, grammars) as mlx-lm applies them.
        token_context = []
        if any(b.logits_processors):
            rows = []
            for e in range(len(b.uids)):
                row = logits[e : e + 1]
                if processors := b.logits_processors[e] or ():
                    context = b._token_context[e].update_and_fetch(inputs[e : e + 1])
                    token_context.append(context)
                    for processor in processors:
                        row = processor(context, row)
                rows.append(row)
            logits = mx.concatenate(rows, axis=0)
        samplers = b.samplers or [None] * len(b.uids)
        if all(_greedy(s) for s in samplers):
            sampled = mx.argmax(logits, axis=-1)
        else:
            sampled = mx.concatenate(
                [(s or b.fallback_sampler)(logits[e : e + 1]) for e, s in enumerate(samplers)]
            )
        b._next_tokens = sampled
        b._next_logprobs = [None] * len(b.uids)
        mx.async_eval(sampled, token_context)
        mx.eval(inputs, b._current_logprobs)  # a normalized step's, where there was one
        tokens: list[int] = inputs.tolist()
        for row_tokens, token in zip(b.tokens, tokens, strict=True):
            row_tokens.append(token)
        return tokens, b._current_logprobs


@dataclass
class _Speculation:
    """A lone greedy row's n-grams, and how long it decodes without drafts after misses."""

    uid: int
    lookup: PromptLookup = field(default_factory=PromptLookup)
    misses: int = 0  # drafts rejected whole in a row
    pause: int = 0  # steps left without a draft

    def missed(self, whole: bool) -> None:
        """Note a checked draft: rejected ``whole`` or not."""
        self.misses = self.misses + 1 if whole else 0
        if whole:
            self.pause = min(MAX_PAUSE, 2 ** (self.misses - 1))


def _greedy(sampler: Any) -> bool:
    # mlx-lm gives rows inserted without a sampler its own greedy one.
    return sampler is None or sampler is greedy_sampler


def needs_logprobs(temperature: float, top_p: float, logprobs: int | None) -> bool:
    """Whether a row must be stepped with normalized log-probabilities."""
    return logprobs is not None or (temperature > 0 and 0 < top_p < 1)


class LeanBatchGenerator(BatchGenerator):
    """mlx-lm's ``BatchGenerator`` (``options`` as it takes them) whose decoding steps skip
    log-probabilities while no row of the batch is ``normalized`` (a predicate on uids), and
    speculate while the batch is one greedy row, counting in ``drafts``. On the CPU, new
    rows' first tokens go out in the step that chooses them (``LeanGenerationBatch.
    first_tokens``); on a GPU, mlx-lm's own order already hides the wait. Newly merged KV
    caches get room for the tokens their rows will add (``reserve``)."""

    def __init__(
        self, normalized: Callable[[int], bool], drafts: DraftStats | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        lean = LeanGenerationBatch.empty(self.model, self.sampler)
        lean.normalized = normalized
        lean.drafts = drafts or DraftStats()
        lean.first_tokens_at_once = self.stream.device == mx.cpu
        self._generation_batch = lean  # every decoding step runs on it (extend merges in)

    def _next(self) -> tuple[list[Any], list[GenerationBatch.Response]]:
        prompt_responses, responses = super()._next()
        lean = cast(LeanGenerationBatch, self._generation_batch)
        return prompt_responses, responses + lean.first_tokens()

    def _make_batch(self, n: int) -> PromptProcessingBatch:
        batch = super()._make_batch(n)
        b: Any = batch
        # Each new row's entry: [segments, tokens processed, tokens to process].
        prompt = max(entry[2] for entry in self._currently_processing[-n:])
        reserve(b.prompt_cache, prompt, max(b.max_tokens))
        return batch


def reserve(cache: list[Any], prompt: int, answer: int) -> None:
    """Make room in a batch's merged KV caches for ``prompt`` more prompt tokens per row and
    ``answer`` tokens after them, of which at most one block of ``BatchKVCache.step``. mlx-lm
    merges cached prompts into caches of exactly their length, so the next tokens reallocate
    every layer's keys and values a block longer (or as many as the prompt's next chunk
    needs) and copy them; on the CPU that made the first step of 32 rows with cached prompts
    cost 325 ms against 112 (docs/engine.md). Sized to what the rows can add, the caches are
    also smaller than a block when the requests are short. (A batch joining a longer one
    takes the longer one's length, so there the room is cut back, unused.)"""
    for c in cache:
        if type(c) is not BatchKVCache or c.keys is None:
            continue  # other layouts grow their own way; an empty cache allocates on use
        room = prompt + min(answer, c.step)
        if c.keys.shape[2] - c._idx >= room:
            continue
        keys, values = c.keys[..., : c._idx, :], c.values[..., : c._idx, :]
        c.keys = mx.pad(keys, [(0, 0), (0, 0), (0, room), (0, 0)])
        c.values = mx.pad(values, [(0, 0), (0, 0), (0, room), (0, 0)])
