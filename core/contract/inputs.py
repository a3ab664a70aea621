"""Input models of the contract's non-job types (the job types live in core.jobs.requests).

Every model forbids unknown fields, so a misspelt field is an error that names it rather than a silent default.
Each carries its own `type` literal because callers send the whole `input` object, `type` included.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import InvalidInput

# A chunk a caller asks for is capped again by the payload limit; this bound only keeps numbers sane.
MAX_CHUNK_REQUEST = 2**31
MAX_FILE_OFFSET = 2**62
# Standard base64 (RFC 4648), padded: what the seed's clients send; line breaks are tolerated by the decoder.
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE = re.compile(r"\s+")


class _Input(BaseModel):
    """Common configuration: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


def is_base64(text: str) -> bool:
    """True when text is padded standard base64 (a `data:...;base64,` prefix and line breaks allowed)."""
    if text.startswith("data:") and ";base64," in text[:200]:
        text = text.split(";base64,", 1)[1]
    compact = _WHITESPACE.sub("", text)
    return bool(compact) and len(compact) % 4 == 0 and _BASE64.fullmatch(compact) is not None


class HealthInput(_Input):
    """`health`: worker health; no fields."""

    type: Literal["health"] = "health"


class UploadFile(_Input):
    """One file of an upload: its name, its bytes as base64, and the caller's content type (not trusted)."""

    filename: str = Field(..., min_length=1, max_length=1024, description="The file's name in the dataset.")
    content: str = Field(..., min_length=1, description="The file's bytes, base64-encoded.")
    content_type: str | None = Field(None, max_length=255, description="Ignored: the type is read from the bytes.")

    @field_validator("content")
    @classmethod
    def _base64(cls, value: str) -> str:
        if not is_base64(value):
            raise ValueError("is not valid base64")
        return value


class UploadInput(_Input):
    """`upload_training_data`: write base64 files into training_data/<training_name>/."""

    type: Literal["upload_training_data"] = "upload_training_data"
    training_name: str = Field(..., min_length=1, max_length=64, description="The dataset's name.")
    files: list[UploadFile] | None = Field(
        None, min_length=1, description="The files: [{filename, content, content_type}]."
    )
    dataset_url: str | None = Field(
        None, min_length=1, max_length=4096, description="Instead of files: an https:// or s3:// URL of a zip."
    )


class ProcessesInput(_Input):
    """`processes`: list processes newest first, filtered by status and job type, paged.

    `type` is the contract's own key ("processes"), so the job-type filter is `job_type`.
    """

    type: Literal["processes"] = "processes"
    status: Literal["queued", "running", "completed", "failed", "cancelled"] | None = None
    job_type: Literal["train", "generate", "caption"] | None = Field(
        None, description="Only trainings, generations or caption jobs."
    )
    limit: int = Field(50, ge=1, le=500, description="Processes per page.")
    cursor: str | None = Field(None, min_length=1, max_length=512, description="next_cursor of the previous page.")


class ProcessStatusInput(_Input):
    """`process_status`: one process."""

    type: Literal["process_status"] = "process_status"
    process_id: str = Field(..., min_length=1, max_length=64)
    metrics: bool = Field(False, description="Add the loss history (`metrics`: phase, stride, points).")
    since_step: int = Field(-1, ge=-1, le=2**62, description="With metrics: only the points after this step.")


class CancelInput(_Input):
    """`cancel`: cancel a queued or running process."""

    type: Literal["cancel"] = "cancel"
    process_id: str = Field(..., min_length=1, max_length=64)
    save: bool = Field(False, description="A running training saves a checkpoint first, then stops.")


class LoraInput(_Input):
    """`lora`: list trained LoRA files; no fields."""

    type: Literal["lora"] = "lora"


class ListModelsInput(_Input):
    """`list_models`: base models on disk and LoRAs; no fields."""

    type: Literal["list_models"] = "list_models"


class ListFilesInput(_Input):
    """`list_files`: files of the workspace, optionally under one folder and matching a name glob."""

    type: Literal["list_files"] = "list_files"
    directory: str | None = Field(None, max_length=4096, description="A folder of the workspace.")
    pattern: str | None = Field(None, min_length=1, max_length=255, description="A file-name glob such as *.png.")
    limit: int = Field(1000, ge=1, le=10_000, description="At most this many files.")


class _ChunkInput(_Input):
    """Where in the file to read: offset and length (capped by the payload limit)."""

    offset: int = Field(0, ge=0, le=MAX_FILE_OFFSET, description="First byte to return.")
    length: int | None = Field(
        None, ge=1, le=MAX_CHUNK_REQUEST, description="Bytes wanted; default the most that fits the payload limit."
    )
    delivery: Literal["url", "base64"] | None = Field(
        None, description="With a bucket: a pre-signed `url` (the default) or `base64` chunks as without one."
    )


class DownloadFileInput(_ChunkInput):
    """`download_file`: one workspace file as base64, in chunks."""

    type: Literal["download_file"] = "download_file"
    file_path: str = Field(..., min_length=1, max_length=4096, description="Relative to the workspace or under it.")


class DownloadInput(_ChunkInput):
    """`download`: a process's main artifact (or the one named) as base64, in chunks."""

    type: Literal["download"] = "download"
    process_id: str = Field(..., min_length=1, max_length=64)
    artifact: str | None = Field(
        None, min_length=1, max_length=1024, description="An artifact name; default the main one."
    )


class BulkDownloadInput(_ChunkInput):
    """`bulk_download`: several files as one zip built on disk, served in chunks; exactly one source."""

    type: Literal["bulk_download"] = "bulk_download"
    file_paths: list[str] | None = Field(None, min_length=1, max_length=10_000, description="Workspace paths.")
    directory: str | None = Field(None, min_length=1, max_length=4096, description="A workspace folder.")
    process_id: str | None = Field(None, min_length=1, max_length=64, description="All of a process's artifacts.")

    def source(self) -> str:
        """Which of file_paths, directory or process_id was given; InvalidInput unless exactly one."""
        given = [name for name in ("file_paths", "directory", "process_id") if getattr(self, name) is not None]
        if len(given) != 1:
            field = given[1] if given else "file_paths"
            raise InvalidInput(field, "give exactly one of file_paths, directory or process_id")
        return given[0]


class ListCaptionsInput(_Input):
    """`list_captions`: a dataset's images with their captions, paged by image path."""

    type: Literal["list_captions"] = "list_captions"
    training_name: str = Field(..., min_length=1, max_length=64, description="The dataset.")
    limit: int = Field(100, ge=1, le=500, description="Images per page.")
    cursor: str | None = Field(None, min_length=1, max_length=1024, description="next_cursor of the previous page.")


class SetCaptionInput(_Input):
    """`set_caption`: replace one image's caption (written atomically)."""

    type: Literal["set_caption"] = "set_caption"
    training_name: str = Field(..., min_length=1, max_length=64, description="The dataset.")
    image: str = Field(..., min_length=1, max_length=1024, description="The image, relative to the dataset.")
    caption: str = Field(..., description="The new caption text (one file, at most 4000 characters).")


CONTRACT_INPUT_MODELS: dict[str, type[BaseModel]] = {
    "health": HealthInput,
    "upload_training_data": UploadInput,
    "processes": ProcessesInput,
    "process_status": ProcessStatusInput,
    "lora": LoraInput,
    "list_models": ListModelsInput,
    "cancel": CancelInput,
    "download": DownloadInput,
    "bulk_download": BulkDownloadInput,
    "list_files": ListFilesInput,
    "download_file": DownloadFileInput,
    "list_captions": ListCaptionsInput,
    "set_caption": SetCaptionInput,
}
