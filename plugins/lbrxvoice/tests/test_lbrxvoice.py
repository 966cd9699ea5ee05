"""The lbrxvoice service: speakable answers, speech in its voice, and the voice turn, checked on
the fake engines (what the service asks of them, independent of the machine's speed)."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
import wave
from typing import Any

import httpx
import numpy as np
import pytest

from mlx_host.fake import FakeCall, FakeLog, FakeSpeech
from mlx_host.testing import RunningServer, check_service_policy, installed_services
from mlx_host_lbrxvoice.plugin import SERVICE
from mlx_host_lbrxvoice.turn import MAX_TURN_SECONDS

ANSWER = "It is sunny. Expect twenty degrees Celsius this afternoon."


def test_lbrxvoice_is_discovered() -> None:
    found = installed_services()["lbrxvoice"]
    assert found.spec is SERVICE and found.distribution == "mlx-host-lbrxvoice"


def test_lbrxvoice_answers_in_short_speakable_sentences(
    mlx_host_fake_server: RunningServer,
) -> None:
    call = check_service_policy(mlx_host_fake_server, SERVICE)
    prompt = call.messages[0]["content"]
    assert "markdown" in prompt and "twenty degrees Celsius" in prompt
    assert call.params.max_tokens <= 160 and SERVICE.policy.max_tokens_cap <= 1024


def tone_wav(seconds: float, rate: int = 16_000) -> bytes:
    """A file that decodes as audio (the fake transcriber answers what it is told to)."""
    samples = (0.2 * np.sin(np.arange(int(seconds * rate)) * 0.05) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def auth(server: RunningServer, service: str = "lbrxvoice") -> dict[str, str]:
    return {"Authorization": f"Bearer {server.keys[service]}"}


def turn_stream(server: RunningServer, audio: bytes, **form: str):
    return httpx.stream(
        "POST", f"{server.url}/api/v1/lbrxvoice/turn", headers=auth(server),
        files={"file": ("question.wav", audio)}, data=form, timeout=10,
    )  # fmt: skip


def events_of(lines: Any) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in lines if line]


def test_speech_uses_the_services_model_and_voice(mlx_host_fake_server: RunningServer) -> None:
    fake: FakeLog = mlx_host_fake_server.fake  # type: ignore[assignment]
    response = httpx.post(
        f"{mlx_host_fake_server.url}/v1/audio/speech",
        headers=auth(mlx_host_fake_server),
        json={"input": ANSWER, "response_format": "pcm"},
    )
    assert response.status_code == 200 and response.content
    assert fake.last.model == "kokoro-82m" and fake.last.service == "lbrxvoice"
    assert fake.last.options.voice == "fake"  # the service's af_heart, by its name


def test_the_turn_speaks_before_the_answer_is_written(mlx_host_fake_server: RunningServer) -> None:
    """The answer is held after its first sentence and the next letter: the first sentence is
    heard while the model has not written the rest."""
    fake: FakeLog = mlx_host_fake_server.fake  # type: ignore[assignment]
    fake.reply("What is the weather?", ANSWER)
    held = len("It is sunny. E")
    with fake.hold(after=held), turn_stream(mlx_host_fake_server, tone_wav(1.0)) as response:
        assert response.status_code == 200
        assert response.headers["x-audio-format"] == "pcm"
        lines = response.iter_lines()
        seen = []
        while not seen or seen[-1]["type"] != "turn.audio.delta":
            seen += events_of([next(lines)])
        written = "".join(e["delta"] for e in seen if e["type"] == "turn.text.delta")
        assert written == ANSWER[:held]  # the model is still held
        fake.release()
        seen += events_of(lines)
    assert seen[0] == {"type": "turn.transcript", "text": "What is the weather?",
                       "language": "english", "duration": 1.0}  # fmt: skip
    done = seen[-1]
    assert done["type"] == "turn.done" and done["text"] == ANSWER
    assert done["transcript"] == "What is the weather?" and "session" not in done
    timings = done["timings"]
    assert timings["transcript"] <= timings["first_audio"] <= timings["done"]
    spoken = [s.text for s in fake.requests if isinstance(s, FakeSpeech)]
    assert spoken == ["It is sunny.", "Expect twenty degrees Celsius this afternoon."]
    audio = b"".join(base64.b64decode(e["audio"]) for e in seen if e["type"] == "turn.audio.delta")
    assert len(audio) == len("".join(spoken)) * 240 * 2  # 10 ms a character, 16-bit


def test_the_turns_models_stay_loaded_until_it_ends(mlx_host_fake_server: RunningServer) -> None:
    """Between its requests (before the first sentence is written, the speech model has none)
    a turn holds its models, so that loading one never evicts another."""
    fake: FakeLog = mlx_host_fake_server.fake  # type: ignore[assignment]
    models = mlx_host_fake_server.app.state.host.models
    fake.reply("Question?", ANSWER)
    with fake.hold(after=3), turn_stream(mlx_host_fake_server, tone_wav(0.5)) as response:
        lines = response.iter_lines()
        next(lines)  # the transcript: the model is now writing, held after three letters
        speech = models.get_loaded("hibari-tts")
        assert speech.holds == 1 and speech.busy and not speech.engine.busy
        fake.release()
        assert events_of(lines)[-1]["type"] == "turn.done"
    assert all(m.holds == 0 for m in models.loaded())


def test_a_client_leaving_mid_turn_frees_everything_and_saves_nothing(
    mlx_host_fake_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake: FakeLog = mlx_host_fake_server.fake  # type: ignore[assignment]
    models = mlx_host_fake_server.app.state.host.models
    url = f"{mlx_host_fake_server.url}/v1/sessions"
    session = httpx.post(url, headers=auth(mlx_host_fake_server), json={}).json()["id"]
    fake.reply("Question?", ANSWER)
    with fake.hold(after=3):
        with turn_stream(mlx_host_fake_server, tone_wav(0.5), session_id=session) as response:
            next(response.iter_lines())
        deadline = time.monotonic() + 10
        while any(m.busy for m in models.loaded()):
            assert time.monotonic() < deadline, [(m.name, m.holds) for m in models.loaded()]
            time.sleep(0.02)
    stored = httpx.get(f"{url}/{session}/messages", headers=auth(mlx_host_fake_server)).json()
    assert stored["data"] == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_turn_with_a_session_is_saved_like_a_chat_turn(
    mlx_host_fake_server: RunningServer,
) -> None:
    fake: FakeLog = mlx_host_fake_server.fake  # type: ignore[assignment]
    url = f"{mlx_host_fake_server.url}/v1/sessions"
    session = httpx.post(url, headers=auth(mlx_host_fake_server), json={}).json()["id"]
    fake.reply("My name is Ada.", "Hello Ada.", "What is my name?", "Your name is Ada.")
    for _ in range(2):
        with turn_stream(mlx_host_fake_server, tone_wav(0.5), session_id=session) as response:
            done = events_of(response.iter_lines())[-1]
        assert done["session"]["id"] == session
    chats = [c for c in fake.requests if isinstance(c, FakeCall)]
    history = chats[-1].messages  # the second turn's prompt held the first turn
    assert [m["content"] for m in history[1:]] == [
        "My name is Ada.", "Hello Ada.", "What is my name?"
    ]  # fmt: skip
    stored = httpx.get(f"{url}/{session}/messages", headers=auth(mlx_host_fake_server)).json()
    assert [m["content"] for m in stored["data"]][-1] == "Your name is Ada."


@pytest.mark.parametrize(
    ("audio", "form", "status", "param"),
    [
        (b"not audio at all", {}, 400, "file"),
        (tone_wav(MAX_TURN_SECONDS + 1, rate=8_000), {}, 400, "file"),
        (tone_wav(0.5), {"voice": "alloy"}, 400, "voice"),
        (tone_wav(0.5), {"response_format": "ogg"}, 400, "response_format"),
        (tone_wav(0.5), {"session_id": "sess_" + "0" * 32}, 404, "session_id"),
    ],
)
def test_bad_turns_fail_before_the_stream(
    mlx_host_fake_server: RunningServer, audio: bytes, form: dict, status: int, param: str
) -> None:
    with turn_stream(mlx_host_fake_server, audio, **form) as response:
        response.read()
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_silence_is_a_400(mlx_host_fake_server: RunningServer) -> None:
    fake: FakeLog = mlx_host_fake_server.fake  # type: ignore[assignment]
    fake.reply("")
    with turn_stream(mlx_host_fake_server, tone_wav(0.5)) as response:
        response.read()
    assert response.status_code == 400 and response.json()["error"]["code"] == "no_speech"
