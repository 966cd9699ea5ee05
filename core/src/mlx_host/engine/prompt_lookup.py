"""Draft tokens for speculative decoding, looked up in the sequence itself.

Where an answer repeats its input (a code edit returns most of the code, an extraction copies
spans of the document), the tokens after the latest earlier occurrence of the sequence's last
few tokens are a good guess at what comes next. The model checks a guess of k tokens in one
forward pass of k + 1 positions, which costs far less than k + 1 passes of one (docs/engine.md
has the figures); a wrong guess costs only that pass's extra width. No draft model is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The longest and shortest suffix looked up: longer matches predict better, and a single
#: token matches too often to be worth a wider pass.
MAX_NGRAM = 3
MIN_NGRAM = 2


class PromptLookup:
    """The n-grams of one growing token sequence, indexed by where each last occurred, so a
    draft costs a few dictionary lookups however long the sequence is."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        # n-gram -> the index just past its latest occurrence that has a token after it.
        self._ends: dict[tuple[int, ...], int] = {}

    def __len__(self) -> int:
        return len(self.tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append ``tokens`` to the sequence."""
        seq = self.tokens
        for token in tokens:
            # The n-grams ending just before the new token now have a continuation: index
            # them (the sequence's own suffix stays unindexed, so it never matches itself).
            end = len(seq)
            for n in range(MIN_NGRAM, MAX_NGRAM + 1):
                if end >= n:
                    self._ends[tuple(seq[end - n : end])] = end
            seq.append(token)

    def draft(self, limit: int) -> list[int]:
        """``limit`` tokens following the latest earlier occurrence of the longest suffix seen
        before (``MAX_NGRAM`` tokens down to ``MIN_NGRAM``), as the sequence would go on if it
        repeated what followed it then; empty when no suffix was seen before."""
        seq = self.tokens
        if limit <= 0:
            return []
        for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
            if len(seq) < n:
                continue
            end = self._ends.get(tuple(seq[-n:]))
            if end is not None:
                draft = seq[end : end + limit]
                # An occurrence close to the end is a repeating pattern: the draft goes on
                # repeating it (each token is the one a period earlier).
                while len(draft) < limit:
                    draft.append(draft[len(draft) - (len(seq) - end)])
                return draft
        return []
