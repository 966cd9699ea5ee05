"""The whisp service: transcription on its own default model, and transcript clean-up that
must not invent anything."""

import io
import wave

import openai
import pytest

from mlx_host.testing import RunningServer, check_service_policy, installed_services
from mlx_host_whisp.plugin import SERVICE


def test_whisp_is_discovered() -> None:
    assert installed_services()["whisp"].spec is SERVICE


def test_whisp_cleans_up_deterministically(mlx_host_fake_server: RunningServer) -> None:
    call = check_service_policy(mlx_host_fake_server, SERVICE)
    assert "never add content" in call.messages[0]["content"]
    assert call.params.temperature == 0.0


def silence(seconds: float = 0.5) -> bytes:
    """A small valid wav file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * int(16_000 * seconds))
    return buffer.getvalue()


def test_whisp_transcribes_with_its_default_model(mlx_host_fake_server: RunningServer) -> None:
    mlx_host_fake_server.fake.reply("Hello from the fake ears.")
    client = mlx_host_fake_server.openai("whisp")
    text = client.audio.transcriptions.create(
        model="default", file=("a.wav", silence()), language="en", prompt="Greetings"
    ).text
    call = mlx_host_fake_server.fake.last
    assert text == "Hello from the fake ears."
    assert (call.service, call.model) == ("whisp", "whisper-large-v3")
    assert call.options.language == "en" and call.options.prompt == "Greetings"
    assert call.audio_bytes == len(silence())


def test_whisp_may_ask_for_the_embedded_model_and_nothing_unknown(
    mlx_host_fake_server: RunningServer,
) -> None:
    client = mlx_host_fake_server.openai("whisp")
    client.audio.transcriptions.create(model="whisper-tiny-en", file=("a.wav", silence()))
    assert mlx_host_fake_server.fake.last.model == "whisper-tiny-en"
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="whisper-huge-v9", file=("a.wav", silence()))
