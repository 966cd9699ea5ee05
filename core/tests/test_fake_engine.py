"""The API's streaming and request handling, checked on the fake engine: independent of the
machine's speed, and of what a model happens to answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ALPHA, plugin_manager

from mlx_host import ServiceSpec
from mlx_host.fake import FakeSpeech
from mlx_host.testing import RunningServer, run_server

SPEAKER = ServiceSpec(name="speaker", key_prefix="speaker_", speech_model="kokoro-82m")
SPEECH = "First sentence here. Second one. Third and last."


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    services = plugin_manager(ALPHA, SPEAKER)
    with run_server({}, services, mlx_host_cache_dir, fake=True) as running:
        yield running


def test_the_first_piece_arrives_before_the_answer_is_finished(server: RunningServer, fake) -> None:
    fake.reply("streamed, not buffered")
    with fake.hold():
        stream = server.openai("alpha").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = iter(stream)
        opening = next(chunks)
        first = next(chunks)  # arrives while the rest of the answer is still held back
        assert opening.choices[0].delta.role == "assistant"
        assert first.choices[0].delta.content == "s"
    rest = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "s" + rest == "streamed, not buffered"


def test_stop_strings_and_max_tokens_reach_the_engine(server: RunningServer, fake) -> None:
    fake.reply("one two STOP three", "abcdefghij")
    client = server.openai("alpha")
    hi = [{"role": "user", "content": "hi"}]
    stopped = client.chat.completions.create(model="default", messages=hi, stop=["STOP"])
    assert stopped.choices[0].message.content == "one two "
    assert stopped.choices[0].finish_reason == "stop"
    cut = client.chat.completions.create(model="default", messages=hi, max_tokens=4)
    assert cut.choices[0].message.content == "abcd"
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 4
    assert fake.requests[0].params.stop == ("STOP",) and fake.requests[1].params.max_tokens == 4


def test_a_client_leaving_mid_answer_frees_the_engine(server: RunningServer, fake) -> None:
    server.openai("alpha").chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hi"}]
    )
    model = server.app.state.host.models.get_loaded("smollm2-135m-instruct")
    fake.reply("a long answer that never gets to finish")
    with fake.hold():
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{server.api_url}/chat/completions",
                headers={"Authorization": f"Bearer {server.keys['alpha']}"},
                json={"messages": [{"role": "user", "content": "hi"}]},
                timeout=1,
            )
        deadline = time.monotonic() + 10
        while model.busy:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_completions_send_the_raw_prompt(server: RunningServer, fake) -> None:
    reply = server.openai("alpha").completions.create(
        model="default", prompt="Once upon", max_tokens=3
    )
    assert fake.last.capability == "completion" and fake.last.prompt == "Once upon"
    assert fake.last.messages is None and reply.choices[0].text == "Onc"


def speech_stream(server: RunningServer, **body: object):
    return httpx.stream(
        "POST", f"{server.api_url}/audio/speech",
        headers={"Authorization": f"Bearer {server.keys['speaker']}"},
        json={"input": SPEECH, "response_format": "pcm", **body}, timeout=10,
    )  # fmt: skip


@pytest.mark.parametrize("stream_format", ["audio", "sse"])
def test_speech_starts_before_the_text_is_synthesized(
    server: RunningServer, fake, stream_format: str
) -> None:
    """The fake speaks a tone of 10 ms per character, a sentence at a time."""
    first_sentence_bytes = len("First sentence here.") * 240 * 2
    with fake.hold(), speech_stream(server, stream_format=stream_format) as response:
        pieces = response.iter_raw() if stream_format == "audio" else response.iter_lines()
        first = next(pieces)  # while the second sentence is held back
        if stream_format == "audio":
            assert len(first) == first_sentence_bytes
        else:
            assert first.startswith('data: {"type": "speech.audio.delta"')
        assert len(fake.requests) == 1 and fake.last.text == SPEECH
        fake.release()
        rest = [piece for piece in pieces if piece]
    assert rest and (stream_format == "audio" or '"speech.audio.done"' in rest[-1])


def test_speech_options_reach_the_engine(server: RunningServer, fake) -> None:
    client = server.openai("speaker")
    response = client.audio.speech.with_raw_response.create(
        model="default", input="Hi.", voice="af_heart", speed=4.0,
        instructions="Speak softly.", response_format="pcm",
    )  # fmt: skip
    call: FakeSpeech = fake.last
    assert (call.model, call.served_by, call.service) == ("kokoro-82m", "hibari-tts", "speaker")
    assert call.options.voice == "fake" and call.options.speed == 4.0  # by its name
    assert call.options.instructions == "Speak softly."
    assert "x-ignored-fields" not in response.headers  # the fake follows instructions
    assert len(response.content) == 3 * 240 * 2 / 4  # three characters at four times the pace


def test_a_client_leaving_mid_speech_stops_the_speech(server: RunningServer, fake) -> None:
    """The server learns that the client left when it sends the next sentence: the sentences
    after it are never synthesized."""
    with fake.hold(), speech_stream(server, input="Word. " * 40) as response:
        next(response.iter_raw())
        response.close()
        fake.release()
    model = server.app.state.host.models.get_loaded("hibari-tts")
    deadline = time.monotonic() + 10
    while model.busy:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert len(fake.last.spoken) < 40
