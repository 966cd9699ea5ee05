"""Speech to text end to end: real speech (synthesized), every upload format, every response
format, the stream, translations, limits and bad files, with the official openai SDK."""

from __future__ import annotations

import io
import itertools
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import ALPHA, plugin_manager
from speech import SENTENCES, TTS_RATE, encode, spoken, spoken_passage, word_error_rate

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.testing import RunningServer, run_server

EARS = ServiceSpec(
    name="ears",
    key_prefix="ears_",
    transcription_model="whisper-large-v3",  # not here: the embedded tiny.en stands in
    policy=ServicePolicy(allowed_models=("whisper-tiny-en", "smollm2")),
)
SENTENCE = SENTENCES[0]
MAX_WER = 0.15


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    settings = {"max_audio_seconds": 120, "max_audio_bytes": 2_000_000}
    with run_server(settings, plugin_manager(EARS, ALPHA), mlx_host_cache_dir) as running:
        yield running


@pytest.fixture(scope="module")
def sentence_wav() -> bytes:
    return encode(spoken(SENTENCE), "wav")


def transcribe(server: RunningServer, data: bytes, name: str = "speech.wav", **kw: object):
    return server.openai("ears").audio.transcriptions.create(
        model="default", file=(name, data), **kw
    )


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "opus", "m4a", "webm"])
def test_every_upload_format_is_transcribed(server: RunningServer, fmt: str) -> None:
    data = encode(spoken(SENTENCE), fmt)
    text = transcribe(server, data, f"speech.{fmt}").text
    assert word_error_rate(SENTENCE, text) <= MAX_WER, text


def test_a_long_file_is_read_in_windows_with_stitched_timestamps(server: RunningServer) -> None:
    passage = SENTENCES * 3  # about 50 seconds: two windows or more
    data = encode(spoken_passage(passage), "mp3")
    result = transcribe(server, data, "long.mp3", response_format="verbose_json")
    assert result.duration > 35
    assert word_error_rate(" ".join(passage), result.text) <= MAX_WER, result.text
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and starts[-1] > 30  # past the first window, in order
    assert len({s.seek for s in result.segments}) >= 2


def test_response_formats(server: RunningServer, sentence_wav: bytes) -> None:
    text = transcribe(server, sentence_wav, response_format="text")
    assert isinstance(text, str) and word_error_rate(SENTENCE, text) <= MAX_WER
    srt = transcribe(server, sentence_wav, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:0") and words_of(srt)
    vtt = transcribe(server, sentence_wav, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ")
    plain = transcribe(server, sentence_wav)
    assert plain.text == text.strip()


def words_of(subtitles: str) -> str:
    return " ".join(line for line in subtitles.splitlines() if line and "-->" not in line)


def test_verbose_json_with_word_timestamps(server: RunningServer, sentence_wav: bytes) -> None:
    result = transcribe(
        server, sentence_wav, response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )  # fmt: skip
    assert result.language == "english" and result.task == "transcribe"
    assert 2 < result.duration < 6
    words = result.words
    assert word_error_rate(SENTENCE, " ".join(w.word for w in words)) <= MAX_WER
    assert all(a.start <= b.start for a, b in itertools.pairwise(words))
    assert all(0 <= w.start <= w.end <= result.duration + 0.1 for w in words)
    assert result.segments and result.segments[0].text.strip()


def test_the_stream_sends_text_as_it_is_decoded(server: RunningServer) -> None:
    passage = SENTENCES[:3]
    data = encode(spoken_passage(passage), "wav")
    stream = server.openai("ears").audio.transcriptions.create(
        model="default", file=("speech.wav", data), stream=True
    )
    events = list(stream)
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    (done,) = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) > 10 and events[-1] is done
    assert "".join(deltas) == done.text
    assert word_error_rate(" ".join(passage), done.text) <= MAX_WER, done.text
    assert done.usage.output_tokens > 10 and done.usage.input_tokens > 0


def test_translation_of_english_speech_is_english(
    server: RunningServer, sentence_wav: bytes
) -> None:
    result = server.openai("ears").audio.translations.create(
        model="default", file=("speech.wav", sentence_wav)
    )
    assert word_error_rate(SENTENCE, result.text) <= MAX_WER


def test_the_stand_in_is_visible(server: RunningServer) -> None:
    models = {m.id: m for m in server.openai("ears").models.list()}
    assert models["whisper-large-v3"].model_extra["served_by"] == "whisper-tiny-en"
    assert models["whisper-large-v3"].model_extra["kind"] == "stt"


def post(server: RunningServer, data: bytes, name: str = "a.wav", **fields: str):
    return httpx.post(
        f"{server.api_url}/audio/transcriptions",
        headers={"Authorization": f"Bearer {server.keys['ears']}"},
        files={"file": (name, data)},
        data={"model": "default", **fields},
        timeout=120,
    )


def tone_wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8_000)
        out.writeframes(b"\0\1" * int(8_000 * seconds))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"", "empty.wav"),
        (b"this is not audio at all, just some text pretending" * 20, "notes.mp3"),
        (bytes(range(256)) * 64, "noise.ogg"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 512, "picture.png"),
    ],
)
def test_files_that_are_not_audio_are_400(server: RunningServer, data: bytes, name: str) -> None:
    response = post(server, data, name)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_audio" and error["param"] == "file"
    assert "wav" in error["message"] or "empty" in error["message"]


def test_truncated_audio_is_400_or_what_was_there(
    server: RunningServer, sentence_wav: bytes
) -> None:
    mp3 = encode(spoken(SENTENCE), "mp3")
    response = post(server, mp3[: len(mp3) // 2], "half.mp3")
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:  # mp3 decodes frame by frame: the first half is text
        assert 0 < len(response.json()["text"]) < len(SENTENCE)


def test_limits(server: RunningServer) -> None:
    too_long = post(server, tone_wav(121), "long.wav")
    assert too_long.status_code == 400
    assert "120" in too_long.json()["error"]["message"]
    too_big = post(server, b"\0" * 2_100_000, "big.wav")
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"include[]": "logprobs"}, "include[]"),
        ({"chunking_strategy": "auto"}, "chunking_strategy"),
        ({"timestamp_granularities[]": "word"}, "timestamp_granularities[]"),
        ({"stream": "true", "response_format": "srt"}, "stream"),
        ({"language": "fr"}, "language"),
        ({"temperature": "3"}, "temperature"),
        ({"response_format": "mp3"}, "response_format"),
    ],
)
def test_fields_that_cannot_be_honoured_are_400_naming_them(
    server: RunningServer, sentence_wav: bytes, fields: dict[str, str], param: str
) -> None:
    response = post(server, sentence_wav, **fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_service_without_transcription_gets_403(server: RunningServer) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        server.openai("alpha").audio.transcriptions.create(
            model="default", file=("a.wav", tone_wav(0.5))
        )
    assert caught.value.body["code"] == "capability_not_offered"


def test_an_llm_is_not_a_transcription_model(server: RunningServer) -> None:
    assert post(server, tone_wav(0.5), model="whisper-tiny-en").status_code == 200
    wrong_kind = post(server, tone_wav(0.5), model="smollm2")
    assert wrong_kind.status_code == 400
    assert wrong_kind.json()["error"]["code"] == "model_not_supported"


def test_transcription_leaves_chat_working(server: RunningServer, sentence_wav: bytes) -> None:
    assert transcribe(server, sentence_wav).text
    reply = server.openai("alpha").chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Say hi."}], max_tokens=3
    )
    assert reply.choices[0].finish_reason


def test_rates_match_what_the_test_speech_is() -> None:
    assert len(spoken(SENTENCE)) / TTS_RATE > 2  # a sentence is seconds of speech
