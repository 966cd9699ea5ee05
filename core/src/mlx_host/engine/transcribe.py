"""Long audio through Whisper, 30 seconds at a time, as Whisper itself reads it.

Each window is decoded with mlx-whisper's ``DecodingTask`` (its prompt, logit rules and
timestamp rules); segments come from the timestamp tokens, and the next window starts where
the last complete segment ended, so words at a window's edge are not cut. The samples come from
a ``PCMStream``, so memory is bounded by a window, not by the file.

Two ways to decode a window:
- whole (not streamed): at temperature 0 first, then higher ones while the text is too
  repetitive or too unlikely, as OpenAI's Whisper does;
- streamed: each token's text leaves as soon as it is decoded. Nothing can be taken back, so
  there is no fallback; a window that starts looking like silence is held until its end
  (and dropped if it is), and one that starts repeating itself is cut short.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import mlx.core as mx
import numpy as np
from mlx_whisper.audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
from mlx_whisper.decoding import DecodingOptions, DecodingResult, DecodingTask
from mlx_whisper.timing import add_word_timestamps
from mlx_whisper.tokenizer import LANGUAGES, Tokenizer, get_tokenizer
from mlx_whisper.whisper import Whisper

from mlx_host.audio import PCMStream
from mlx_host.engine.whisper_fast import WhisperInference, encode_audio
from mlx_host.transcription import Segment, Transcript, TranscriptionOptions, Word

COMPRESSION_RATIO_LIMIT = 2.4  # above: repetitive
LOGPROB_LIMIT = -1.0  # below: unlikely
NO_SPEECH_LIMIT = 0.6  # above (and unlikely): silence
#: Streamed windows are checked for repetition every this many tokens.
REPETITION_CHECK_TOKENS = 24


class Cancelled(Exception):
    """The request went away; its transcription stops at the next token."""


def compression_ratio(text: str) -> float:
    """How much the text shrinks under zlib: repetitive text shrinks a lot."""
    data = text.encode()
    return len(data) / max(1, len(zlib.compress(data)))


class _Utf8Text:
    """Text tokens to text, handing out only complete UTF-8 (a token can end mid-character)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._pending = b""

    def add(self, token: int) -> str:
        self._pending += self._tokenizer.encoding.decode_single_token_bytes(token)
        try:
            text, self._pending = self._pending.decode(), b""
        except UnicodeDecodeError as exc:  # hold the unfinished character back
            text = self._pending[: exc.start].decode()
            self._pending = self._pending[exc.start :]
        return text


class _Task(DecodingTask):
    """mlx-whisper's decoding of one window (a batch of one) on the faster forward passes
    (``whisper_fast``), telling ``on_token`` about each token once it is chosen; ``on_token``
    returns True to end the window there. As in mlx-whisper, the next step is computed while
    the last one is looked at."""

    def __init__(
        self,
        model: Whisper,
        options: DecodingOptions,
        on_token: Callable[[int, float], bool] | None,
    ) -> None:
        super().__init__(model, options)
        self.inference = WhisperInference(model)
        self._on_token = on_token

    def _get_audio_features(self, mel: mx.array) -> mx.array:
        return encode_audio(self.model, mel)

    def _main_loop(self, audio_features: mx.array, tokens: mx.array) -> Any:
        def step(inputs: mx.array, tokens: mx.array, sum_logprobs: mx.array) -> Any:
            pre_logits = self.inference.logits(inputs, audio_features)
            logits = pre_logits[:, -1]
            for logit_filter in self.logit_filters:
                logits = logit_filter.apply(logits, tokens)
            return (*self.decoder.update(tokens, logits, sum_logprobs), pre_logits)

        tokens, completed, sum_logprobs, pre_logits = step(
            tokens, tokens, mx.zeros(tokens.shape[0])
        )
        if self.tokenizer.no_speech is not None:
            at_sot = mx.softmax(pre_logits[:, self.sot_index], axis=-1)
            no_speech_probs = at_sot[:, self.tokenizer.no_speech]
        else:
            no_speech_probs = mx.full(tokens.shape[0], mx.nan)
        mx.async_eval(completed, tokens, sum_logprobs, no_speech_probs)
        for _ in range(1, self.sample_len):
            if tokens.shape[-1] > self.n_ctx:
                break
            following = step(tokens[:, -1:], tokens, sum_logprobs)
            mx.async_eval(following[:3])
            if completed.item():
                break
            if self._on_token is not None and self._on_token(
                cast(int, tokens[0, -1].item()), cast(float, no_speech_probs[0].item())
            ):
                tokens = mx.concatenate([tokens, mx.array([[self.tokenizer.eot]])], axis=-1)
                break
            tokens, completed, sum_logprobs, _ = following
        return tokens, sum_logprobs, no_speech_probs


@dataclass
class _Window:
    seek: int  # first frame
    frames: int  # frames of audio in it (3000 but at the end)
    mel: mx.array


class WindowedTranscription:
    """One file's transcription: windows in order, segments, and the text as it comes.

    ``emit`` receives text as soon as it is final; ``cancelled`` is asked at every token.
    """

    def __init__(
        self,
        model: Whisper,
        pcm: PCMStream,
        options: TranscriptionOptions,
        emit: Callable[[str], None],
        cancelled: Callable[[], bool],
        dtype: Any,
    ) -> None:
        self.model, self.pcm, self.options = model, pcm, options
        self._emit, self._cancelled, self._dtype = emit, cancelled, dtype
        self._emitted_any = False
        self.output_tokens = 0

    # -- windows ------------------------------------------------------------------------

    def _window(self, seek: int) -> _Window | None:
        samples = self.pcm.read(seek * HOP_LENGTH, seek * HOP_LENGTH + N_SAMPLES)
        frames = min(N_FRAMES, len(samples) // HOP_LENGTH)
        if frames == 0:
            return None
        padding = N_SAMPLES - len(samples)  # zeros after the end, as Whisper pads
        mel = log_mel_spectrogram(samples, n_mels=self.model.dims.n_mels, padding=padding)
        mel = pad_or_trim(mel[:frames], N_FRAMES, axis=-2).astype(self._dtype)
        return _Window(seek, frames, mel)

    def _language(self, window: _Window) -> str:
        if self.options.language is not None:
            return self.options.language
        if not self.model.is_multilingual:
            return "en"
        _, probs = self.model.detect_language(window.mel)
        return str(max(probs, key=probs.get))

    # -- decoding -----------------------------------------------------------------------

    def _say(self, text: str) -> None:
        if not self._emitted_any:
            text = text.lstrip()
        if text:
            self._emitted_any = True
            self._emit(text)

    def _decode_streamed(self, mel: mx.array, options: DecodingOptions) -> DecodingResult:
        tokenizer = get_tokenizer(
            self.model.is_multilingual, num_languages=self.model.num_languages,
            language=options.language, task=options.task,
        )  # fmt: skip
        text = _Utf8Text(tokenizer)
        held: list[str] = []  # text of a window that may be silence
        window_text: list[str] = []
        seen = 0

        def on_token(token: int, no_speech_prob: float) -> bool:
            nonlocal seen
            if self._cancelled():
                raise Cancelled
            seen += 1
            if token >= tokenizer.eot:  # timestamps and other specials are not text
                return False
            piece = text.add(token)
            window_text.append(piece)
            if no_speech_prob > NO_SPEECH_LIMIT:
                held.append(piece)
            else:
                self._say("".join(held) + piece)
                held.clear()
            return seen % REPETITION_CHECK_TOKENS == 0 and (
                compression_ratio("".join(window_text)) > COMPRESSION_RATIO_LIMIT
            )

        result: DecodingResult = _Task(self.model, options, on_token).run(mel[None])[0]
        if held and not self._is_silence(result):
            self._say("".join(held))
        return result

    def _decode_whole(self, mel: mx.array, options: DecodingOptions) -> DecodingResult:
        """Temperature 0 first (unless the caller chose one), higher ones on failure."""
        first = self.options.temperature
        temperatures = [first] if first > 0 else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        result: DecodingResult | None = None
        for temperature in temperatures:
            on_token = self._check_cancelled
            result = _Task(self.model, replace(options, temperature=temperature), on_token).run(
                mel[None]
            )[0]
            failed = (
                result.compression_ratio > COMPRESSION_RATIO_LIMIT
                or result.avg_logprob < LOGPROB_LIMIT
            )
            if not failed or result.no_speech_prob > NO_SPEECH_LIMIT:
                break
        assert result is not None
        return result

    def _check_cancelled(self, token: int, no_speech_prob: float) -> bool:
        if self._cancelled():
            raise Cancelled
        return False

    @staticmethod
    def _is_silence(result: DecodingResult) -> bool:
        return result.no_speech_prob > NO_SPEECH_LIMIT and result.avg_logprob < LOGPROB_LIMIT

    # -- the file -----------------------------------------------------------------------

    def run(self) -> Transcript:
        """Transcribe the whole stream."""
        first = self._window(0)
        if first is None:
            return Transcript("", self.options.language or "en", 0.0, [], 0)
        language = self._language(first)
        tokenizer = get_tokenizer(
            self.model.is_multilingual, num_languages=self.model.num_languages,
            language=language, task=self.options.task,
        )  # fmt: skip
        prompt: list[int] = []
        if self.options.prompt:
            prompt = tokenizer.encode(" " + self.options.prompt.strip())
        history: list[int] = list(prompt)  # the text so far, the next window's prompt
        segments: list[Segment] = []
        last_speech = 0.0
        window: _Window | None = first
        while window is not None:
            options = DecodingOptions(
                task=self.options.task, language=language, temperature=self.options.temperature,
                prompt=history[-223:], fp16=self._dtype == mx.float16,
            )  # fmt: skip
            decode = self._decode_streamed if self.options.stream else self._decode_whole
            result = decode(window.mel, options)
            self.output_tokens += len(result.tokens)
            if self._is_silence(result):
                seek = window.seek + window.frames
            else:
                found, seek = self._segments(window, result, tokenizer, len(segments))
                if self.options.word_timestamps and found:
                    last_speech = self._add_words(found, window, tokenizer, last_speech)
                segments += [replace(s, id=len(segments) + i)
                             for i, s in enumerate(x for x in found if x.text.strip())]  # fmt: skip
                for segment in found:
                    history += [t for t in segment.tokens if t < tokenizer.eot]
                if not self.options.stream:
                    for segment in found:
                        self._say(segment.text)
            self.pcm.forget(seek * HOP_LENGTH)
            window = self._window(seek)
        duration = self.pcm.decoded / (HOP_LENGTH * 100)
        text = "".join(s.text for s in segments).strip()
        return Transcript(text, LANGUAGES.get(language, language), duration, segments,
                          self.output_tokens)  # fmt: skip

    def _segments(
        self, window: _Window, result: DecodingResult, tokenizer: Tokenizer, first_id: int
    ) -> tuple[list[Segment], int]:
        """The window's segments, from its timestamp tokens, and where the next one starts."""
        tokens = np.array(result.tokens)
        offset = window.seek * HOP_LENGTH / 16_000
        precision = 0.02  # seconds per timestamp step
        stamps = tokens >= tokenizer.timestamp_begin
        single_ending = stamps[-2:].tolist() == [False, True]
        boundaries = (np.where(stamps[:-1] & stamps[1:])[0] + 1).tolist()

        def segment(piece: np.ndarray, start: float, end: float, index: int) -> Segment:
            text_tokens = [int(t) for t in piece if t < tokenizer.eot]
            return Segment(
                id=index, seek=window.seek, start=round(start, 3), end=round(end, 3),
                text=tokenizer.decode(text_tokens), tokens=[int(t) for t in piece],
                temperature=result.temperature, avg_logprob=result.avg_logprob,
                compression_ratio=result.compression_ratio,
                no_speech_prob=result.no_speech_prob,
            )  # fmt: skip

        found: list[Segment] = []
        if boundaries:
            if single_ending:
                boundaries.append(len(tokens))
            last = 0
            for cut in boundaries:
                piece = tokens[last:cut]
                start = offset + (int(piece[0]) - tokenizer.timestamp_begin) * precision
                end = offset + (int(piece[-1]) - tokenizer.timestamp_begin) * precision
                found.append(segment(piece, start, end, first_id + len(found)))
                last = cut
            if single_ending:
                seek = window.seek + window.frames
            else:  # the last segment is incomplete: the next window starts where it began
                seek = window.seek + (int(tokens[last - 1]) - tokenizer.timestamp_begin) * 2
        else:
            duration = window.frames / 100
            timestamps = tokens[stamps]
            if len(timestamps) and int(timestamps[-1]) != tokenizer.timestamp_begin:
                duration = (int(timestamps[-1]) - tokenizer.timestamp_begin) * precision
            found.append(segment(tokens, offset, offset + duration, first_id))
            seek = window.seek + window.frames
        return found, max(seek, window.seek + 1)

    def _add_words(
        self, found: list[Segment], window: _Window, tokenizer: Tokenizer, last_speech: float
    ) -> float:
        """Word timestamps from the cross-attention alignment (mlx-whisper's), in place."""
        rows = [{"tokens": s.tokens, "start": s.start, "end": s.end, "seek": s.seek} for s in found]
        add_word_timestamps(
            segments=rows, model=self.model, tokenizer=tokenizer, mel=window.mel,
            num_frames=window.frames, last_speech_timestamp=last_speech,
        )  # fmt: skip
        for i, (segment, row) in enumerate(zip(found, rows, strict=True)):
            timed = cast(list[dict[str, Any]], row.get("words", []))
            words = [
                Word(w["word"], round(float(w["start"]), 3), round(float(w["end"]), 3),
                     round(float(w["probability"]), 4))
                for w in timed
            ]  # fmt: skip
            start, end = (
                round(float(cast(float, row["start"])), 3),
                round(float(cast(float, row["end"])), 3),
            )
            found[i] = replace(segment, words=words, start=start, end=end)
        ends = [w.end for s in found for w in s.words]
        return ends[-1] if ends else last_speech
