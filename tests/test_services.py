"""All five services on one server, called through the official openai SDK."""

from __future__ import annotations

import io
import wave

import numpy as np
import openai
import pytest

from mlx_host.testing import RunningServer

BUNDLED = {"vista", "fork", "whisp", "anydatanext", "lbrxvoice"}


def test_every_bundled_service_is_installed(mlx_host_server: RunningServer) -> None:
    assert set(mlx_host_server.keys) >= BUNDLED


def test_vista_chat_answers_sensibly(mlx_host_server: RunningServer) -> None:
    reply = mlx_host_server.openai("vista").chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "What is the capital of France? One word."}],
        max_tokens=20,
        temperature=0,
    )
    assert "Paris" in reply.choices[0].message.content


def test_vista_streams(mlx_host_server: RunningServer) -> None:
    stream = mlx_host_server.openai("vista").chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Name three mammals."}],
        max_tokens=24,
        stream=True,
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3


def test_each_service_uses_its_own_default(mlx_host_server: RunningServer) -> None:
    for service in BUNDLED:
        models = [m.id for m in mlx_host_server.openai(service).models.list()]
        default = mlx_host_server.app.state.host.services[service].spec.default_model("chat")
        assert models[0] == default


def test_bad_key_gets_401(mlx_host_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=mlx_host_server.api_url, api_key="vista_wrong")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])


def test_model_outside_policy_gets_403(mlx_host_server: RunningServer) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        mlx_host_server.openai("lbrxvoice").chat.completions.create(
            model="deepseek-coder", messages=[{"role": "user", "content": "x"}]
        )


def test_whisp_transcribes_real_speech(mlx_host_server: RunningServer) -> None:
    """whisp's default (whisper-large-v3) is served by the embedded tiny.en as a stand-in."""
    hibari = pytest.importorskip("hibari")
    speech = hibari.Hibari(voice="heart", threads=1)("Please call me back tomorrow morning.")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(24_000)
        out.writeframes((np.clip(speech, -1, 1) * 32767).astype(np.int16).tobytes())
    text = mlx_host_server.openai("whisp").audio.transcriptions.create(
        model="default", file=("call.wav", buffer.getvalue())
    ).text
    assert "call me back tomorrow morning" in text.lower()
