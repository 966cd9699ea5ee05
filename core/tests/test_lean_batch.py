"""The lean decoding step chooses the tokens mlx-lm's own step chooses, with or without
log-probabilities, and still gives them to the rows that need them; a lone greedy row that
decodes several tokens a step speculatively chooses them too (a small random llama,
in-process)."""

from __future__ import annotations

from typing import Any, cast

import mlx.core as mx
import pytest
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import BatchRotatingKVCache, make_prompt_cache

from mlx_host.engine.lean_batch import (
    DraftStats,
    LeanBatchGenerator,
    LeanGenerationBatch,
    needs_logprobs,
    reserve,
)
from mlx_host.engine.prompt_lookup import PromptLookup
from mlx_host.engine.random_model import random_llama
from mlx_host.engine.sampling import make_request_sampler

PROMPTS = [[1, 2, 3, 4], [5, 6], [7, 8, 9], [10] * 6]


@pytest.fixture(scope="module")
def model() -> Any:
    return random_llama(3, tied=True)  # a vocabulary of 300


@pytest.fixture(scope="module")
def varied_model() -> Any:
    """A random llama whose answer to ``REPEATING`` cycles through several tokens (the
    fixture above repeats one), so a draft accepted in part is told from one accepted whole."""
    return random_llama(0, tied=False)


def decode(generator: BatchGenerator, samplers: list[Any]) -> dict[int, tuple[list, list]]:
    """Each row's tokens and whether each step gave it log-probabilities."""
    uids = generator.insert(PROMPTS, max_tokens=[12] * len(PROMPTS), samplers=samplers)
    assert uids == list(range(len(PROMPTS)))
    out: dict[int, tuple[list, list]] = {uid: ([], []) for uid in uids}
    while any(len(tokens) < 12 for tokens, _ in out.values()):
        for r in generator.next_generated():
            out[r.uid][0].append(r.token)
            out[r.uid][1].append(r.logprobs is not None)
    generator.close()
    return {i: out[uid] for i, uid in enumerate(uids)}


@pytest.mark.parametrize("normalized_rows", [set(), {1}, {0, 1, 2, 3}])
def test_tokens_match_mlx_lms_own_step(model: Any, normalized_rows: set[int]) -> None:
    # Greedy rows and one sampled by temperature alone (seeded, so both runs draw alike).
    def samplers() -> list[Any]:
        return [None, None, make_request_sampler(0.8, 1.0, seed=7), None]

    stock = decode(BatchGenerator(model, completion_batch_size=8), samplers())
    # A fresh generator numbers its rows from 0, in the order they are inserted.
    lean_generator = LeanBatchGenerator(
        normalized_rows.__contains__, model=model, completion_batch_size=8
    )
    assert isinstance(lean_generator._generation_batch, LeanGenerationBatch)
    lean = decode(lean_generator, samplers())
    assert [tokens for tokens, _ in lean.values()] == [tokens for tokens, _ in stock.values()]
    for row, (_, given) in lean.items():
        if normalized_rows:
            assert all(given[1:]), row  # every row gets them while one needs them
        else:
            assert not any(given[1:]), row  # the first tokens come from mlx-lm's own step


def test_rows_that_need_log_probabilities() -> None:
    assert not needs_logprobs(0.0, 1.0, None)
    assert not needs_logprobs(0.7, 1.0, None)  # temperature alone: shift-invariant
    assert needs_logprobs(0.7, 0.9, None)  # top-p reads probabilities
    assert needs_logprobs(0.0, 1.0, 0)


def decode_alone(
    generator: BatchGenerator, prompt: list[int], max_tokens: int, **insert: Any
) -> tuple[list[int], list[int], Any]:
    """One row's tokens, how many each step that gave any gave, and its last response."""
    generator.insert([prompt], max_tokens=[max_tokens], **insert)
    tokens: list[int] = []
    widths: list[int] = []
    for _ in range(4 * max_tokens):
        responses = generator.next_generated()
        if not responses:  # the step after the first token only puts it in the KV cache
            continue
        widths.append(len(responses))
        tokens += [r.token for r in responses]
        if responses[-1].finish_reason is not None:
            generator.close()
            return tokens, widths, responses[-1]
    raise AssertionError("the row did not finish")


REPEATING = [5, 6, 7, 8, 9, 10, 11, 12] * 2


@pytest.mark.parametrize("max_tokens", [3, 17, 40])
@pytest.mark.parametrize("prompt", [[1, 2, 3, 4], REPEATING, [10] * 6])
def test_a_lone_greedy_row_decodes_several_tokens_a_step_exactly(
    model: Any, prompt: list[int], max_tokens: int
) -> None:
    stock, _, stock_last = decode_alone(BatchGenerator(model), prompt, max_tokens)
    lean_generator = LeanBatchGenerator(lambda uid: False, model=model)
    lean, widths, last = decode_alone(lean_generator, prompt, max_tokens)
    assert lean == stock
    if max_tokens > 3:  # this small model repeats itself, so its drafts are accepted
        assert max(widths) > 1
    # The cache handed back holds exactly the tokens handed back with it.
    assert last.all_tokens == stock_last.all_tokens
    assert last.prompt_cache[0].offset == len(last.all_tokens)
    assert last.finish_reason == stock_last.finish_reason == "length"


@pytest.mark.parametrize("length", range(12, 21))  # one of them ends inside every draft
def test_a_stop_sequence_ending_inside_a_draft_ends_the_row_there(model: Any, length: int) -> None:
    free, _, _ = decode_alone(BatchGenerator(model), [1, 2, 3, 4], 40)
    options = {"stop_tokens": [free[:length]]}  # the row's own first tokens
    stock, _, _ = decode_alone(BatchGenerator(model, **options), [1, 2, 3, 4], 40)
    lean_generator = LeanBatchGenerator(lambda uid: False, model=model, **options)
    lean, widths, last = decode_alone(lean_generator, [1, 2, 3, 4], 40)
    assert lean == stock == free[:length]
    assert last.finish_reason == "stop"
    assert last.prompt_cache[0].offset == len(last.all_tokens)
    assert max(widths) > 1


@pytest.mark.parametrize(
    "row",
    [
        {"samplers": [make_request_sampler(0.8, 1.0, seed=7)]},
        {"logits_processors": [[lambda tokens, logits: logits]]},
        {"normalized": True},
    ],
    ids=["sampled", "processed", "logprobs"],
)
def test_rows_that_are_not_greedy_decode_one_token_a_step(model: Any, row: dict[str, Any]) -> None:
    normalized = row.pop("normalized", False)
    generator = LeanBatchGenerator(lambda uid: normalized, model=model)
    _, widths, _ = decode_alone(generator, REPEATING, 30, **row)
    assert set(widths) == {1}


def wrong_at(position: int) -> Any:
    """A ``PromptLookup.draft`` whose drafts are wrong from ``position`` on."""
    draft = PromptLookup.draft

    def wrong(self: PromptLookup, limit: int) -> list[int]:
        tokens = draft(self, limit)
        return tokens[:position] + [(t + 1) % 300 for t in tokens[position:]]

    return wrong


@pytest.mark.parametrize("position", [0, 1, 3])
def test_rejected_drafts_cost_nothing_but_time(
    varied_model: Any, monkeypatch: pytest.MonkeyPatch, position: int
) -> None:
    model = varied_model
    stock, _, _ = decode_alone(BatchGenerator(model), REPEATING, 40)
    assert len(set(stock)) > 2
    monkeypatch.setattr(PromptLookup, "draft", wrong_at(position))
    drafts = DraftStats()
    lean_generator = LeanBatchGenerator(lambda uid: False, drafts, model=model)
    lean, widths, last = decode_alone(lean_generator, REPEATING, 40)
    assert lean == stock
    assert last.prompt_cache[0].offset == len(last.all_tokens)
    assert drafts.rejected > 0
    assert drafts.accepted == sum(w - 1 for w in widths)  # every accepted token was emitted
    if position:
        assert drafts.accepted > 0
    else:
        # Drafts rejected whole pause the drafting, longer after each: 6 passes, not 38.
        assert drafts.accepted == 0
        assert drafts.rejected <= 6 * 8


def test_a_row_joining_a_speculating_row_decodes_as_in_mlx_lm(varied_model: Any) -> None:
    model = varied_model

    def decode_pair(generator: BatchGenerator) -> tuple[list[int], list[int]]:
        (first,) = generator.insert([REPEATING], max_tokens=[30])
        out: dict[int, list[int]] = {first: []}
        while len(out[first]) < 10:  # the first row alone, speculating where it can
            for r in generator.next_generated():
                out[r.uid].append(r.token)
        (second,) = generator.insert([[1, 2, 3, 4]], max_tokens=[20])
        out[second] = []
        while len(out[first]) < 30 or len(out[second]) < 20:
            for r in generator.next_generated():
                out[r.uid].append(r.token)
        generator.close()
        return out[first], out[second]

    lean_generator = LeanBatchGenerator(lambda uid: False, model=model)
    assert decode_pair(lean_generator) == decode_pair(BatchGenerator(model))


def steps_to_first_token(generator: BatchGenerator, prompt: list[int], **insert: Any) -> tuple:
    """How many steps a new row takes to its first token, and that token's response."""
    generator.insert([prompt], **insert)
    for step in range(1, 10):
        _, responses = generator.next()
        if responses:
            return step, responses[0]
    raise AssertionError("no token in 10 steps")


@pytest.mark.parametrize("prompt", [[7], [1, 2, 3, 4]])
def test_a_new_rows_first_token_goes_out_in_the_step_that_chooses_it(
    model: Any, prompt: list[int]
) -> None:
    stock_steps, stock = steps_to_first_token(BatchGenerator(model), prompt, max_tokens=[5])
    lean_generator = LeanBatchGenerator(lambda uid: False, model=model)
    steps, first = steps_to_first_token(lean_generator, prompt, max_tokens=[5])
    assert (steps, first.token) == (stock_steps - 1, stock.token)
    assert first.finish_reason is None


@pytest.mark.parametrize("ends", ["length", "stop"])
def test_a_row_its_first_token_ends_leaves_with_its_cache(model: Any, ends: str) -> None:
    _, free = steps_to_first_token(BatchGenerator(model), [1, 2, 3, 4], max_tokens=[5])
    options = {"stop_tokens": [[free.token]]} if ends == "stop" else {}
    generator = LeanBatchGenerator(lambda uid: False, model=model, **options)
    _, first = steps_to_first_token(
        generator, [1, 2, 3, 4], max_tokens=[1 if ends == "length" else 5]
    )
    assert (first.token, first.finish_reason) == (free.token, ends)
    # The cache holds the prompt (the first token never entered it), and the row is gone.
    assert first.all_tokens == [1, 2, 3, 4]
    assert first.prompt_cache[0].offset == 4
    assert generator.next() == ([], [])


def cached(model: Any, prompt: list[int]) -> list[Any]:
    """A prompt cache holding ``prompt``."""
    cache = make_prompt_cache(model)
    model(mx.array([prompt]), cache=cache)
    mx.eval([c.state for c in cache])
    return cache


@pytest.mark.parametrize(
    ("rest", "size", "stock_size"),
    [(1, 5 + 1 + 12, 5 + 256), (300, 5 + 300 + 12, 5 + 512)],
    ids=["cached-but-the-last-token", "a-long-rest"],
)
def test_rows_with_cached_prompts_get_room_for_their_tokens(
    model: Any, rest: int, size: int, stock_size: int
) -> None:
    prompts = [p[:-1] + [(7 * i + t) % 300 for t in range(rest)] for i, p in enumerate(PROMPTS)]

    def run(generator: BatchGenerator) -> tuple[dict[int, list[int]], set[int]]:
        """Each row's tokens, and the lengths its first layer's keys had at each step."""
        uids = generator.insert(
            [p[-rest:] for p in prompts], max_tokens=[12] * len(prompts),
            caches=[cached(model, p[:-rest]) for p in prompts],
            all_tokens=[p[:-rest] for p in prompts],
        )  # fmt: skip
        out: dict[int, list[int]] = {uid: [] for uid in uids}
        sizes = set()
        while any(len(tokens) < 12 for tokens in out.values()):
            for r in generator.next_generated():
                out[r.uid].append(r.token)
            if generator._generation_batch.prompt_cache:
                sizes.add(generator._generation_batch.prompt_cache[0].keys.shape[2])
        return out, sizes

    stock, stock_sizes = run(BatchGenerator(model, completion_batch_size=8))
    lean, sizes = run(LeanBatchGenerator(lambda uid: False, model=model, completion_batch_size=8))
    assert lean == stock
    # Made once, as long as the longest cached prompt (5), the rest of the prompt and the
    # answer, where mlx-lm reallocates whole blocks longer as the rows fill them.
    assert sizes == {size}
    assert stock_sizes == {stock_size}


def test_caches_of_other_layouts_keep_their_own_growth() -> None:
    rotating = BatchRotatingKVCache(max_size=8, left_padding=[0])
    rotating.keys = rotating.values = mx.zeros((1, 1, 2, 4))
    rotating._idx = 2
    reserve([rotating], 5, 5)
    assert rotating.keys.shape[2] == 2


def test_a_row_its_first_token_ends_leaves_the_others_as_in_mlx_lm(model: Any) -> None:
    def run(generator: BatchGenerator) -> tuple[dict[int, list[int]], Any]:
        """Each row's tokens, and the response that ended the one-token row."""
        (first,) = generator.insert([[1, 2, 3, 4]], max_tokens=[10])
        out: dict[int, list[int]] = {first: [r.token for r in generator.next_generated()]}
        short, other = generator.insert([[5, 6, 7], [8, 9]], max_tokens=[1, 10])
        out |= {short: [], other: []}
        ended = None
        for _ in range(40):
            if len(out[first]) == len(out[other]) == 10:
                break
            for r in generator.next_generated():
                out[r.uid].append(r.token)
                if r.uid == short:
                    ended = r
        return out, ended

    stock, stock_ended = run(BatchGenerator(model))
    lean, ended = run(LeanBatchGenerator(lambda uid: False, model=model))
    assert lean == stock
    assert ended.finish_reason == stock_ended.finish_reason == "length"
    # mlx-lm's cache also holds the first token; this one holds the prompt: each matches
    # the tokens handed back with it.
    assert ended.all_tokens == [5, 6, 7]
    assert ended.prompt_cache[0].offset == 3


def test_a_row_removed_after_its_first_token_hands_back_its_prompts_cache(model: Any) -> None:
    generator = LeanBatchGenerator(lambda uid: False, model=model)
    (uid,) = generator.insert([[1, 2, 3, 4]], max_tokens=[10])
    while not generator.next_generated():
        pass
    cache, tokens = generator.remove([uid], return_prompt_caches=True)[uid]
    assert list(tokens) == [1, 2, 3, 4]
    assert cache[0].offset == 4
    assert generator.next() == ([], [])


def test_a_first_tokens_log_probabilities_are_mlx_lms(model: Any) -> None:
    _, stock = steps_to_first_token(BatchGenerator(model), [1, 2, 3, 4], max_tokens=[5])
    generator = LeanBatchGenerator(lambda uid: True, model=model)
    _, first = steps_to_first_token(generator, [1, 2, 3, 4], max_tokens=[5])
    assert first.token == stock.token
    assert mx.allclose(first.logprobs, stock.logprobs).item()


def test_on_a_gpu_first_tokens_keep_mlx_lms_order(model: Any) -> None:
    stock_steps, stock = steps_to_first_token(BatchGenerator(model), [1, 2, 3], max_tokens=[5])

    def gpu_ordered() -> BatchGenerator:
        generator = LeanBatchGenerator(lambda uid: False, model=model)
        cast(Any, generator._generation_batch).first_tokens_at_once = False  # as on a GPU
        return generator

    steps, first = steps_to_first_token(gpu_ordered(), [1, 2, 3], max_tokens=[5])
    assert (steps, first.token) == (stock_steps, stock.token)
    # A prompt this model continues with its last token, so a draft is ready from the start.
    prompt = [23] * 6 + [3] * 6
    tokens, widths, _ = decode_alone(gpu_ordered(), prompt, 20)
    assert tokens == decode_alone(BatchGenerator(model), prompt, 20)[0]
    assert widths[0] == 1 and max(widths) > 1  # the lone row speculates after its first token
