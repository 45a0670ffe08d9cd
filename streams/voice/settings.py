"""Settings of the transcription stage (``voice.transcription``, streams/voice/transcribe.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class TranscriptionSettings(BaseModel):
    """Which transcriber turns recordings into speaker-labelled turns, and how hard it works."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: Literal["none", "pocketsphinx", "whisper", "http"] = Field(
        "pocketsphinx",
        description="none: voice metrics only. pocketsphinx: offline, its English model ships "
        "in the wheel (modest accuracy). whisper: faster-whisper with the model in model_dir "
        "(pip install 'callstream[whisper]'). http: an OpenAI-compatible speech service at url.",
    )
    max_concurrency: int = Field(
        1, ge=1, le=64, description="Recordings transcribed at once (worker threads); others queue."
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Tries of a recording whose transcriber fails before the "
        "case is marked transcript failed.",
    )
    end_silence_ms: int = Field(
        600, ge=90, le=5000, description="A pause this long ends an utterance (one turn)."
    )
    max_utterance_seconds: float = Field(
        30.0, gt=1, le=300, description="A longer stretch of speech is cut into several turns."
    )
    language: str = Field(
        "en", min_length=2, max_length=16, description="Language code (whisper and http)."
    )
    model_dir: Path | None = Field(
        None,
        description="whisper: the CTranslate2 model folder (required). pocketsphinx: a folder "
        "with hmm/ (acoustic model), lm.bin and dict.dict to replace the shipped en-us model.",
    )
    url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="http: the transcription endpoint (POST multipart 'file' = WAV, 'model', "
        "'language'; answers JSON with 'text'), e.g. http://asr:8000/v1/audio/transcriptions.",
    )
    api_key: SecretStr | None = Field(None, description="http: sent as 'Authorization: Bearer'.")
    model: str = Field("whisper-1", description="http: the 'model' form field.")
    timeout_seconds: float = Field(120.0, gt=0, le=3600, description="http: per utterance.")

    @model_validator(mode="after")
    def _engine_needs(self) -> Self:
        if self.engine == "whisper" and self.model_dir is None:
            raise ValueError("engine whisper needs model_dir (the faster-whisper model folder)")
        if self.engine == "http" and not self.url:
            raise ValueError("engine http needs url (the speech service endpoint)")
        return self
