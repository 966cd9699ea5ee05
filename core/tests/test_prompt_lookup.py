"""Draft tokens looked up in a sequence's own n-grams (pure logic)."""

from __future__ import annotations

from mlx_host.engine.prompt_lookup import PromptLookup


def lookup_of(tokens: list[int]) -> PromptLookup:
    lookup = PromptLookup()
    lookup.extend(tokens)
    return lookup


def test_the_tokens_after_the_latest_earlier_occurrence_of_the_suffix() -> None:
    # "3 4" occurred twice before the end; the later occurrence is followed by 9 8.
    lookup = lookup_of([1, 3, 4, 5, 6, 2, 3, 4, 9, 8, 7, 3, 4])
    assert lookup.draft(2) == [9, 8]
    assert lookup.draft(0) == []
    assert len(lookup) == 13


def test_the_longest_suffix_seen_before_wins() -> None:
    # "2 3 4" predicts 7; the bigram "3 4" alone would have predicted 5 (its latest).
    lookup = lookup_of([2, 3, 4, 7, 1, 3, 4, 5, 0, 2, 3, 4])
    assert lookup.draft(1) == [7]


def test_no_draft_without_a_bigram_seen_before() -> None:
    assert lookup_of([1, 2, 3, 4, 1]).draft(4) == []  # one token alone is no evidence
    assert lookup_of([]).draft(4) == []
    assert lookup_of([7]).draft(4) == []


def test_a_repeating_pattern_goes_on_repeating() -> None:
    assert lookup_of([1, 2, 3, 1, 2, 3, 1, 2]).draft(7) == [3, 1, 2, 3, 1, 2, 3]
    assert lookup_of([5, 5, 5]).draft(4) == [5, 5, 5, 5]


def test_growing_the_sequence_in_pieces_is_growing_it_at_once() -> None:
    tokens = [4, 1, 2, 9, 4, 1, 2, 8, 4, 1]
    pieces = PromptLookup()
    for token in tokens:
        pieces.extend([token])
    assert pieces.draft(3) == lookup_of(tokens).draft(3) == [2, 8, 4]
