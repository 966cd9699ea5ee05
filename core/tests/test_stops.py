"""StopMatcher: stop strings found across chunk boundaries, nothing of them emitted."""

from mlx_host.stops import StopMatcher


def feed_all(matcher: StopMatcher, chunks: list[str]) -> tuple[str, bool]:
    out = []
    for chunk in chunks:
        text, stopped = matcher.feed(chunk)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_no_stops_passes_everything_through_at_once() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("abc") == ("abc", False)


def test_stop_split_across_chunks() -> None:
    assert feed_all(StopMatcher(["END"]), ["hello E", "N", "D more"]) == ("hello ", True)


def test_partial_match_that_fails_is_released() -> None:
    assert feed_all(StopMatcher(["END"]), ["an E", "ND", "x"]) == ("an ", True)
    assert feed_all(StopMatcher(["END"]), ["an E", "nd", "x"]) == ("an Endx", False)


def test_earliest_of_several_stops_wins_and_is_named() -> None:
    matcher = StopMatcher(["world", "lo"])
    assert feed_all(matcher, ["hello world"]) == ("hel", True)
    assert matcher.matched == "lo"
    unmatched = StopMatcher(["zz"])
    assert feed_all(unmatched, ["hello"]) == ("hello", False) and unmatched.matched is None


def test_text_is_held_back_only_as_long_as_the_longest_stop() -> None:
    matcher = StopMatcher(["abcd"])
    assert matcher.feed("xyzab") == ("xy", False)
