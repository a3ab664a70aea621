"""The one settings object, read from the environment (names are part of the product)."""

from __future__ import annotations

import socket
import sys
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.webhooks.signing import secret_bytes


class Settings(BaseSettings):
    """lorapod's configuration; secrets are SecretStr and never appear in a repr."""

    model_config = SettingsConfigDict(
        env_prefix="LORAPOD_", extra="ignore", env_file=None, populate_by_name=True, hide_input_in_errors=True
    )

    workspace: Path = Field(Path("./workspace"), description="Root of datasets, models, outputs and logs.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default an SQLite file in the workspace.")
    ai_toolkit_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("AI_TOOLKIT_DIR", "LORAPOD_AI_TOOLKIT_DIR"),
        description="Folder holding ai-toolkit's run.py.",
    )
    ai_toolkit_python: str = Field(
        sys.executable,
        validation_alias=AliasChoices("AI_TOOLKIT_PYTHON", "LORAPOD_AI_TOOLKIT_PYTHON"),
        description="Interpreter of ai-toolkit's environment.",
    )
    gpus: str | None = Field(None, description="GPU indexes to schedule on, e.g. '0,1'; default all detected.")
    api_key: SecretStr | None = Field(None, description="Bearer token required on every route but /health.")
    hf_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("HF_TOKEN", "LORAPOD_HF_TOKEN"),
        description="Hugging Face token for gated models; passed to subprocesses only.",
    )
    worker_id: str = Field(
        default_factory=socket.gethostname,
        description="This server's name in the process table; restart recovery only touches its own jobs.",
    )
    host: str = Field("127.0.0.1", description="Address the REST server binds to.")
    port: int = Field(8000, description="Port the REST server binds to.")
    stop_grace_seconds: float = Field(60.0, description="Seconds between SIGINT and SIGKILL on cancel.")
    save_timeout_seconds: float = Field(
        300.0, description="Longest wait for the checkpoint a cancel-with-save asks for before it stops anyway."
    )
    progress_interval_seconds: float = Field(1.0, description="Least time between two stored progress updates.")
    generation_idle_seconds: float = Field(300.0, description="Idle time after which the warm generator exits.")
    max_upload_bytes: int = Field(2 * 1024**3, description="Largest dataset upload (one request).")
    max_file_bytes: int = Field(100 * 1024**2, description="Largest single dataset file.")
    max_zip_entries: int = Field(10_000, description="Most entries a dataset zip may unpack.")
    max_yaml_bytes: int = Field(256 * 1024, description="Largest YAML config accepted.")
    payload_limit_run_bytes: int = Field(10 * 1000**2, description="Largest /run payload (RunPod: 10 MB).")
    payload_limit_runsync_bytes: int = Field(20 * 1000**2, description="Largest /runsync payload (20 MB).")
    result_retention_run_seconds: float = Field(1800.0, description="How long /run results are kept.")
    result_retention_runsync_seconds: float = Field(60.0, description="How long /runsync results are kept.")

    webhook_secret: SecretStr | None = Field(
        None, description="Standard Webhooks secret (whsec_<base64>) signing every webhook; webhooks need it."
    )
    webhook_allow_private: bool = Field(False, description="Allow webhooks to loopback and private addresses.")
    webhook_attempts: int = Field(6, ge=1, le=20, description="Delivery attempts of a job's final webhook.")
    webhook_backoff_seconds: float = Field(2.0, ge=0, description="Wait before the 2nd attempt; doubles after.")
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one webhook attempt.")
    webhook_progress_seconds: float = Field(10.0, ge=0, description="Least time between two progress webhooks.")

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Fail at start-up, not at the first delivery; the message never repeats the value.
        if value is not None:
            secret_bytes(value.get_secret_value())
        return value

    def webhook_key(self) -> bytes | None:
        """The HMAC key of LORAPOD_WEBHOOK_SECRET, or None when webhooks are off."""
        return secret_bytes(self.webhook_secret.get_secret_value()) if self.webhook_secret else None

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file inside the workspace."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.workspace / 'lorapod.db').resolve()}"

    def subprocess_secrets(self) -> dict[str, str]:
        """Secret environment variables handed to trainer subprocesses, never written anywhere."""
        return {"HF_TOKEN": self.hf_token.get_secret_value()} if self.hf_token else {}


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
