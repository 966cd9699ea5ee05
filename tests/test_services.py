"""All five services on one server, called through the official openai SDK."""

from __future__ import annotations

import base64
import io
import json
import wave
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import openai
import pydantic
import pytest

from mlx_host.testing import RunningServer

BUNDLED = {"vista", "fork", "whisp", "anydatanext", "lbrxvoice"}
#: all-MiniLM-L6-v2's vectors as the reference implementation computes them.
MINILM_REFERENCE = Path(__file__).parents[1] / "core" / "tests" / "data" / "minilm_reference.json"


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
    text = (
        mlx_host_server.openai("whisp")
        .audio.transcriptions.create(model="default", file=("call.wav", buffer.getvalue()))
        .text
    )
    assert "call me back tomorrow morning" in text.lower()


def test_lbrxvoice_answers_a_spoken_question_out_loud(mlx_host_server: RunningServer) -> None:
    """The whole voice turn on the embedded models: a question spoken by the service's own
    voice, heard by Whisper, answered by SmolLM2, spoken by hibari, and saved to a session."""
    headers = {"Authorization": f"Bearer {mlx_host_server.keys['lbrxvoice']}"}
    question = mlx_host_server.openai("lbrxvoice").audio.speech.create(
        model="default", voice="af_heart", input="What is the capital of France?",
        response_format="wav",
    ).content  # fmt: skip
    sessions = f"{mlx_host_server.url}/v1/sessions"
    session = httpx.post(sessions, headers=headers, json={}).json()["id"]
    with httpx.stream(
        "POST", f"{mlx_host_server.url}/api/v1/lbrxvoice/turn", headers=headers,
        files={"file": ("question.wav", question)}, data={"session_id": session}, timeout=120,
    ) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        events = [json.loads(line[6:]) for line in response.iter_lines() if line]
    assert "capital of france" in events[0]["text"].lower()
    done = events[-1]
    assert done["type"] == "turn.done" and done["text"].strip(), events[-3:]
    audio = b"".join(
        base64.b64decode(e["audio"]) for e in events if e["type"] == "turn.audio.delta"
    )
    assert len(audio) / 2 / 24_000 > 0.5  # over half a second of 24 kHz 16-bit speech
    assert 0 < done["timings"]["first_audio"] <= done["timings"]["done"]
    stored = httpx.get(f"{sessions}/{session}/messages", headers=headers).json()["data"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[0]["content"] == events[0]["text"] and stored[1]["content"] == done["text"]


def test_only_lbrxvoice_keys_may_take_a_voice_turn(mlx_host_server: RunningServer) -> None:
    response = httpx.post(
        f"{mlx_host_server.url}/api/v1/lbrxvoice/turn",
        headers={"Authorization": f"Bearer {mlx_host_server.keys['vista']}"},
        files={"file": ("question.wav", b"RIFF")},
    )
    assert response.status_code == 403 and "lbrxvoice" in response.json()["error"]["message"]


class City(pydantic.BaseModel):
    """A schema the SDK sends as a strict json_schema response format; every field bounded, so
    that the answer fits max_tokens whatever the model prefers to write."""

    name: str = pydantic.Field(max_length=30)
    country: str = pydantic.Field(max_length=30)
    population_millions: int = pydantic.Field(ge=0, le=100)


def test_anydatanext_answers_json_that_validates(mlx_host_server: RunningServer) -> None:
    client = mlx_host_server.openai("anydatanext")
    ask = [{"role": "user", "content": "Describe Paris."}]
    parsed = client.chat.completions.parse(
        model="default", messages=ask, response_format=City, max_tokens=128
    )
    assert isinstance(parsed.choices[0].message.parsed, City)
    # Without a format, the service's own: a JSON object.
    plain = client.chat.completions.create(model="default", messages=ask, max_tokens=64)
    content = plain.choices[0].message.content
    if plain.choices[0].finish_reason == "length":  # any JSON object is unbounded
        assert content.startswith("{"), content
    else:
        assert isinstance(json.loads(content), dict), content


def test_anydatanext_extracts_against_a_schema(mlx_host_server: RunningServer) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 40},
                       "age": {"type": "integer", "minimum": 0, "maximum": 130}},
        "required": ["name", "age"], "additionalProperties": False,
    }  # fmt: skip
    response = httpx.post(
        f"{mlx_host_server.url}/api/v1/anydatanext/extract",
        json={"text": "Ann Smith turned 31 last week.", "schema": schema, "max_tokens": 96},
        headers={"Authorization": f"Bearer {mlx_host_server.keys['anydatanext']}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    jsonschema.validate(response.json()["data"], schema)


def test_only_anydatanext_keys_may_extract(mlx_host_server: RunningServer) -> None:
    response = httpx.post(
        f"{mlx_host_server.url}/api/v1/anydatanext/extract",
        json={"text": "Ann is 31.", "schema": {"type": "object"}},
        headers={"Authorization": f"Bearer {mlx_host_server.keys['vista']}"},
    )
    assert response.status_code == 403, response.text


def test_anydatanext_embeds_with_minilm(mlx_host_server: RunningServer) -> None:
    reference = json.loads(MINILM_REFERENCE.read_text())[:4]
    response = mlx_host_server.openai("anydatanext").embeddings.create(
        model="default", input=[r["text"] for r in reference]
    )
    got = np.array([d.embedding for d in response.data])
    want = np.array([r["vector"] for r in reference])
    cosines = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert response.model == "all-minilm-l6-v2" and cosines.min() >= 0.999, cosines
