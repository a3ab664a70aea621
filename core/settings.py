"""The one settings object, read from the environment (names are part of the product)."""

from __future__ import annotations

import socket
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

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
    lease_seconds: float = Field(
        30.0,
        gt=0,
        description="A running job's lease: a pod that stops renewing it this long is taken as lost.",
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
    bundle_retention_seconds: float = Field(
        3600.0, ge=0, description="bulk_download zips are removed this long after their last use; 0 keeps them."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log lines: human-readable text or JSON lines.")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="Least severity logged (lorapod and uvicorn)."
    )
    access_log: bool = Field(
        False,
        description="One log line per HTTP request (uvicorn's access log). Off by default, as RunPod's own server and "
        "gunicorn have it: clients poll every second, and /metrics counts and times every route anyway.",
    )
    shutdown_timeout_seconds: float = Field(
        5.0, gt=0, description="On SIGTERM, how long open requests may take to finish before they are cut."
    )

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    # Object storage, with RunPod's own worker variable names; unset endpoint: the workspace alone.
    bucket_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices("BUCKET_ENDPOINT_URL", "bucket_endpoint_url"),
        description="S3-compatible endpoint, optionally naming the bucket (virtual-hosted or path-style).",
    )
    bucket_access_key_id: str | None = Field(
        None, validation_alias=AliasChoices("BUCKET_ACCESS_KEY_ID", "bucket_access_key_id")
    )
    bucket_secret_access_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("BUCKET_SECRET_ACCESS_KEY", "bucket_secret_access_key")
    )
    bucket: str | None = Field(None, description="The bucket's name; default the one BUCKET_ENDPOINT_URL names.")
    bucket_prefix: str = Field("", description="Key prefix of everything lorapod writes to the bucket.")
    presign_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600, description="Lifetime of pre-signed URLs.")
    dataset_url_allow_private: bool = Field(
        False, description="Let dataset_url fetch from loopback and private addresses (and plain http)."
    )

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
