"""Text on its way to speech: cut into sentences as an LLM streams it, and freed of Markdown."""

from __future__ import annotations

import pytest

from mlx_host.speech import MAX_SENTENCE_CHARS, SentenceSplitter, speakable


def split_streamed(text: str, piece: int) -> list[str]:
    splitter = SentenceSplitter()
    out = []
    for i in range(0, len(text), piece):
        out += splitter.feed(text[i : i + piece])
    return out + splitter.flush()


@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_sentences_come_out_whatever_the_pieces(piece: int) -> None:
    text = 'It is 3.5 km away. Dr. Smith said "go!" Then we left? Yes…\nNew line'
    assert split_streamed(text, piece) == [
        "It is 3.5 km away.",
        'Dr. Smith said "go!"',
        "Then we left?",
        "Yes…",
        "New line",
    ]


def test_a_sentence_is_given_out_as_soon_as_the_next_begins() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Hello there.") == []  # it may still be "Hello there.com"
    assert splitter.feed(" How") == ["Hello there."]
    assert splitter.feed(" are you") == []
    assert splitter.flush() == ["How are you"]
    assert splitter.flush() == []


def test_initials_and_titles_do_not_end_sentences_but_numbers_do() -> None:
    assert split_streamed("J. K. Rowling wrote it. Mrs. Lee paid 25. I said no. Ok.", 4) == [
        "J. K. Rowling wrote it.",
        "Mrs. Lee paid 25.",
        "I said no.",
        "Ok.",
    ]


@pytest.mark.parametrize("piece", [7, 10_000])
def test_a_long_sentence_is_cut_at_a_clause_else_between_words(piece: int) -> None:
    clause = "and then another thing happened, "
    parts = split_streamed(clause * 20 + "the end. Next one.", piece)
    assert len(parts) > 2 and all(len(p) <= MAX_SENTENCE_CHARS for p in parts)
    assert all(p.endswith(",") for p in parts[:-2]) and parts[-1] == "Next one."
    assert " ".join(parts) == (clause * 20 + "the end. Next one.").strip()
    words = "word " * 100 + "last."
    parts = split_streamed(words, piece)
    assert len(parts) > 1 and all(len(p) <= MAX_SENTENCE_CHARS for p in parts)
    assert " ".join(parts) == words  # cut between words, never inside one


def test_numbered_lists_are_spoken_item_by_item() -> None:
    text = "Do this:\n1. Preheat the oven.\n2. Bake it. Then eat.\n"
    sentences = split_streamed(text, 3)
    assert sentences == ["Do this:", "1. Preheat the oven.", "2. Bake it.", "Then eat."]
    assert [speakable(s) for s in sentences[1:3]] == ["Preheat the oven.", "Bake it."]


def test_markdown_is_not_read_aloud() -> None:
    text = "# Title\n**Bold** and *it* with `code`.\n- first\n2. second\n> quote [link](http://x)"
    assert speakable(text) == "Title\nBold and it with code.\nfirst\nsecond\nquote link"
    for plain in ("C# costs 3.50 > 2 and 2 * 3 = 6", "call snake_case_name", "a - b"):
        assert speakable(plain) == plain
    assert speakable("__init__ is _really_ ~~not~~ it") == "init is really not it"
