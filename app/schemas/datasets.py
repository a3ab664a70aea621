"""Datasets as the REST routes show them: an upload's summary, a dataset, and the list of datasets."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.schemas import Schema, examples

SKIPPED_EXAMPLE = {
    "filename": "notes.pdf",
    "reason": "unsupported file: only PNG, JPEG and WebP images, .txt captions and .zip archives are accepted",
}
RENAMED_EXAMPLE = {"from": "photo.png", "to": "photo.jpg", "reason": "content is JPEG"}
UPLOAD_EXAMPLE: dict[str, Any] = {
    "dataset": "my_dataset",
    "saved": ["img_01.png", "img_01.txt", "portraits/img_02.jpg"],
    "skipped": [SKIPPED_EXAMPLE],
    "renamed": [RENAMED_EXAMPLE],
    "images": 2,
    "captions": 1,
    "images_without_caption": ["portraits/img_02.jpg"],
}
SUMMARY_EXAMPLE: dict[str, Any] = {
    "name": "my_dataset",
    "images": 2,
    "captions": 1,
    "images_without_caption": ["portraits/img_02.jpg"],
    "captions_without_image": [],
    "size_bytes": 1048576,
    "skipped": [{"filename": "fake.png", "reason": "not an image: content is not PNG, JPEG or WebP"}],
    "modified": "2025-01-01T12:00:00Z",
}
DATASET_EXAMPLE: dict[str, Any] = {
    **SUMMARY_EXAMPLE,
    "files": [{"path": "img_01.png", "size": 524288}, {"path": "img_01.txt", "size": 24}],
}


class SkippedFile(Schema):
    """A file that was not kept, and why."""

    model_config = examples(SKIPPED_EXAMPLE)

    filename: str
    reason: str


class RenamedFile(Schema):
    """A file kept under another name because its bytes said another image type than its name."""

    model_config = examples(RENAMED_EXAMPLE)

    from_: str = Field(alias="from", description="The name it was sent with.")
    to: str = Field(description="The name it was saved under.")
    reason: str


class UploadSummary(Schema):
    """One upload: what this request saved, skipped and renamed, and the dataset's counts after it."""

    model_config = examples(UPLOAD_EXAMPLE)

    dataset: str
    saved: list[str] = Field(description="Files written, relative to the dataset.")
    skipped: list[SkippedFile]
    renamed: list[RenamedFile]
    images: int = Field(description="Images in the dataset now.")
    captions: int = Field(description="Captions in the dataset now.")
    images_without_caption: list[str]


class DatasetFile(Schema):
    """One file of a dataset."""

    path: str = Field(description="Relative to the dataset.")
    size: int = Field(description="Bytes.")


class DatasetSummary(Schema):
    """A dataset's counts, unpaired files, size and past skips (no file list)."""

    model_config = examples(SUMMARY_EXAMPLE)

    name: str
    images: int
    captions: int
    images_without_caption: list[str]
    captions_without_image: list[str]
    size_bytes: int
    skipped: list[SkippedFile] = Field(description="Files earlier uploads skipped, and why.")
    modified: str = Field(description="Last change, ISO 8601 (UTC).")


class Dataset(DatasetSummary):
    """A dataset with every file and its size."""

    model_config = examples(DATASET_EXAMPLE)

    files: list[DatasetFile]


class DatasetList(Schema):
    """Every dataset, by name."""

    model_config = examples({"data": [SUMMARY_EXAMPLE]})

    data: list[DatasetSummary]
