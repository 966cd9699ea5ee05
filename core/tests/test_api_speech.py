"""Text to speech end to end with the embedded hibari: intelligible (transcribed back by the
embedded Whisper), every format, streamed in both stream formats, voices, and bad input, with
the official openai SDK."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
from conftest import ALPHA, plugin_manager
from speech import SENTENCES, word_error_rate

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.engine.mlx_audio_tts import MLXAudioEngine
from mlx_host.errors import ModelFilesMissingError
from mlx_host.models.spec import KOKORO_TTS
from mlx_host.settings import Settings
from mlx_host.testing import RunningServer, run_server

VOICE = ServiceSpec(
    name="voice",
    key_prefix="voice_",
    speech_model="kokoro-82m",  # not here: the embedded hibari stands in
    transcription_model="whisper-tiny-en",
    policy=ServicePolicy(voice="af_heart", allowed_models=("hibari-tts",)),
)
LONG = " ".join(SENTENCES)
MAX_WER = 0.10


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    with run_server({}, plugin_manager(VOICE, ALPHA), mlx_host_cache_dir) as running:
        yield running


def speak(server: RunningServer, text: str, **kw: object) -> bytes:
    kw.setdefault("voice", "heart")
    return server.openai("voice").audio.speech.create(model="default", input=text, **kw).content


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples of an encoded file, and their rate."""
    with av.open(io.BytesIO(data)) as container:
        frames = [f for f in container.decode(audio=0)]
    rate = frames[0].sample_rate
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)
    if samples.dtype.kind == "i":
        samples = samples / 32768
    return samples, rate


def post(server: RunningServer, body: dict, service: str = "voice") -> httpx.Response:
    return httpx.post(
        f"{server.api_url}/audio/speech",
        json=body,
        headers={"Authorization": f"Bearer {server.keys[service]}"},
        timeout=60,
    )


def test_speech_is_intelligible(server: RunningServer) -> None:
    """Round trip: each sentence spoken (in a different format each), then transcribed by the
    embedded Whisper."""
    heard = []
    for sentence, fmt in zip(SENTENCES, ("mp3", "wav", "opus", "aac", "flac"), strict=True):
        audio = speak(server, sentence, response_format=fmt)
        transcription = server.openai("voice").audio.transcriptions.create(
            model="default", file=(f"speech.{fmt}", audio)
        )
        heard.append(transcription.text)
    assert word_error_rate(LONG, " ".join(heard)) <= MAX_WER, heard


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [("mp3", "audio/mpeg"), ("opus", "audio/ogg"), ("aac", "audio/aac"),
     ("flac", "audio/flac"), ("wav", "audio/wav")],
)  # fmt: skip
def test_every_format_holds_the_whole_speech(
    server: RunningServer, fmt: str, media_type: str
) -> None:
    pcm = np.frombuffer(speak(server, SENTENCES[1], response_format="pcm"), "<i2")
    response = post(server, {"input": SENTENCES[1], "response_format": fmt})
    assert response.status_code == 200 and response.headers["content-type"] == media_type
    samples, rate = decode(response.content)
    assert abs(len(samples) / rate - len(pcm) / 24_000) < 0.1  # encoder padding at most
    assert np.abs(samples).max() > 0.05  # not silence


def test_pcm_and_wav_are_24khz_16bit(server: RunningServer) -> None:
    pcm = speak(server, SENTENCES[2], response_format="pcm")
    wav = speak(server, SENTENCES[2], response_format="wav")
    assert len(pcm) % 2 == 0 and len(pcm) > 24_000  # over half a second
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt "
    channels, rate = int.from_bytes(wav[22:24], "little"), int.from_bytes(wav[24:28], "little")
    assert (channels, rate) == (1, 24_000)
    assert len(wav) - 44 == pytest.approx(len(pcm), rel=0.01)  # the same speech


def test_a_long_input_streams_sentence_by_sentence(server: RunningServer) -> None:
    client = server.openai("voice")
    with client.audio.speech.with_streaming_response.create(
        model="default", voice="heart", input=LONG, response_format="pcm"
    ) as response:
        chunks = list(response.iter_bytes(chunk_size=None))  # as the server sent them
    assert len(chunks) >= len(SENTENCES)
    audio = b"".join(chunks)

    with httpx.stream(
        "POST", f"{server.api_url}/audio/speech",
        json={"input": LONG, "response_format": "pcm", "stream_format": "sse"},
        headers={"Authorization": f"Bearer {server.keys['voice']}"}, timeout=60,
    ) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in response.iter_lines() if line]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= len(SENTENCES) and events[-1]["type"] == "speech.audio.done"
    sse_audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert len(sse_audio) == pytest.approx(len(audio), rel=0.02)
    usage = events[-1]["usage"]
    assert usage["input_tokens"] == len(LONG) and usage["output_tokens"] > 50 * 10


def test_voices_are_listed_with_the_services_default_first(server: RunningServer) -> None:
    response = httpx.get(
        f"{server.api_url}/audio/voices",
        headers={"Authorization": f"Bearer {server.keys['voice']}"},
    )
    body = response.json()
    assert body["model"] == "kokoro-82m" and body["served_by"] == "hibari-tts"
    first = body["data"][0]
    assert first["id"] == "heart" and "af_heart" in first["aliases"] and first["default"]
    # A voice is named by its name or an alias; both are the same voice.
    assert speak(server, "Hi.", voice="af_heart", response_format="pcm")


def test_instructions_the_model_cannot_follow_are_reported(server: RunningServer) -> None:
    response = post(server, {"input": "Hello.", "voice": "heart", "instructions": "Whisper."})
    assert response.status_code == 200
    assert response.headers["x-ignored-fields"] == "instructions"
    assert "x-ignored-fields" not in post(server, {"input": "Hello."}).headers


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"input": "x" * 4097}, "input", "4096"),
        ({"input": "   "}, "input", "empty"),
        ({"input": "Hi.", "voice": "alloy"}, "voice", "valid voices: heart"),
        ({"input": "Hi.", "response_format": "ogg"}, "response_format", "mp3"),
        ({"input": "Hi.", "speed": 3.0}, "speed", "0.5 to 2.0"),
        ({"input": "Hi.", "speed": 9}, "speed", "4"),
        ({"input": "Hi.", "stream_format": "chunks"}, "stream_format", "sse"),
        ({"input": "Hi.", "pitch": 2}, "pitch", "pitch"),
        ({"voice": "heart"}, "input", "input"),
    ],
)
def test_bad_requests_get_400_naming_the_field(
    server: RunningServer, body: dict, param: str, says: str
) -> None:
    response = post(server, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error


def test_a_service_without_speech_gets_403(server: RunningServer) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        server.openai("alpha").audio.speech.create(model="default", voice="heart", input="Hi.")


def test_kokoro_without_its_weights_is_503_naming_the_files(
    mlx_host_cache_dir: Path, tmp_path: Path
) -> None:
    """Nothing is imported or downloaded for a model whose files are missing."""
    (tmp_path / "config.json").write_text('{"model_type": "kokoro"}')
    settings = {"models": {"kokoro-82m": str(tmp_path)}}
    with run_server(settings, plugin_manager(VOICE), mlx_host_cache_dir) as running:
        response = post(running, {"input": "Hi."})
    assert response.status_code == 503, response.text
    message = response.json()["error"]["message"]
    if importlib.util.find_spec("mlx_audio") is None:
        assert "pip install mlx-audio" in message
    else:
        assert "*.safetensors (the weights)" in message and str(tmp_path) not in message
    kokoro = KOKORO_TTS.model_copy(update={"source": str(tmp_path)})
    with pytest.raises(ModelFilesMissingError) as missing:
        MLXAudioEngine.prepare(kokoro, Settings())
    assert "*.safetensors (the weights); voices/a*.safetensors" in missing.value.message
    assert str(tmp_path) not in missing.value.message  # no server paths in what callers see
    assert "mlx_audio" not in sys.modules
