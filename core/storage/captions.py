"""A dataset's captions: every image with its caption (paged), one caption rewritten, thumbnails for a preview.

A caption is the UTF-8 file beside its image with the same stem and `.txt` (what ai-toolkit reads). Images
are named relative to the dataset (`portraits/img_02.jpg`); a name that is not one of the dataset's images,
hidden files and ai-toolkit's caches included, is refused before any file is touched, so no caller path
leaves the dataset. Captions are written through a temporary file renamed into place.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from core.errors import InvalidInput, NotFound, PathEscape
from core.storage.datasets import _CACHE_DIRS, DatasetStore, _dataset_files
from core.storage.media import IMAGE_SUFFIXES
from core.storage.workspace import atomic_write_text
from gpu.caption_protocol import CAPTION_SUFFIX, MAX_CAPTION_CHARS, TEMP_PREFIX

MAX_PAGE = 500
MIN_THUMBNAIL, MAX_THUMBNAIL = 16, 1024
_CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


@dataclass(frozen=True, slots=True)
class CaptionedImage:
    """One image of a dataset and its caption (None when it has no caption file)."""

    image: str
    caption: str | None
    size: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "image": self.image,
            "caption": self.caption,
            "has_caption": self.caption is not None,
            "size": self.size,
        }


def dataset_images(folder: Path) -> list[Path]:
    """The dataset's images as ai-toolkit sees them (hidden names and caches left out), by relative path text."""
    images = [p for p in _dataset_files(folder) if p.suffix.lower() in IMAGE_SUFFIXES]
    # Sorted as the strings the cursor compares, not as Paths (which order "a/b.png" before "a.png").
    return sorted(images, key=lambda p: p.relative_to(folder).as_posix())


def caption_file(image: Path) -> Path:
    """The caption file of an image."""
    return image.with_suffix(CAPTION_SUFFIX)


def read_caption(image: Path) -> str | None:
    """An image's caption without its trailing newline, or None when it has none."""
    path = caption_file(image)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CAPTION_CHARS * 4 + 1)
    except (FileNotFoundError, IsADirectoryError):
        return None
    return data.decode("utf-8", errors="replace").rstrip("\r\n")


def remove_stale_temporaries(folder: Path) -> int:
    """Delete caption temporaries a killed caption worker left behind; returns how many."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _CACHE_DIRS]
        for name in filenames:
            if name.startswith(TEMP_PREFIX):
                (Path(dirpath) / name).unlink(missing_ok=True)
                removed += 1
    return removed


class CaptionStore:
    """Captions and image previews of the datasets under training_data/."""

    def __init__(self, datasets: DatasetStore) -> None:
        self.datasets = datasets

    def folder(self, name: str) -> Path:
        """An existing dataset's folder; NotFound naming training_name otherwise."""
        folder = self.datasets.folder(name)
        if not folder.is_dir():
            raise NotFound(f"dataset '{name}' does not exist", field="training_name")
        return folder

    def image_path(self, name: str, image: str) -> Path:
        """One image of the dataset by its path relative to the dataset; refuses anything else."""
        folder = self.folder(name)
        if not isinstance(image, str) or not image or "\x00" in image or "\\" in image:
            raise PathEscape("image", "must be a plain path relative to the dataset")
        relative = PurePosixPath(image)
        if relative.is_absolute() or ".." in relative.parts:
            raise PathEscape("image", "must stay inside the dataset")
        if any(part.startswith(".") or part in _CACHE_DIRS for part in relative.parts):
            raise NotFound(f"'{image}' is not an image of dataset '{name}'", field="image")
        if relative.suffix.lower() not in IMAGE_SUFFIXES:
            raise InvalidInput("image", f"must name an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
        target = (folder / relative).resolve()
        if not target.is_relative_to(folder.resolve()):
            raise PathEscape("image", "points outside the dataset")
        if not target.is_file():
            raise NotFound(f"'{image}' is not an image of dataset '{name}'", field="image")
        return target

    def page(self, name: str, *, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        """Images by path with their captions, limit per page, after the cursor (the last image of a page)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput("limit", f"must be between 1 and {MAX_PAGE}")
        folder = self.folder(name)
        images = dataset_images(folder)
        relative = [p.relative_to(folder).as_posix() for p in images]
        start = 0
        if cursor is not None:
            # Paths sort stably, so a page starts after the cursor even when images were added or removed.
            start = next((i for i, rel in enumerate(relative) if rel > cursor), len(relative))
        chunk = list(zip(relative[start : start + limit], images[start : start + limit], strict=True))
        entries = [CaptionedImage(rel, read_caption(path), path.stat().st_size) for rel, path in chunk]
        more = start + limit < len(relative)
        captioned = sum(1 for path in images if caption_file(path).is_file())
        return {
            "dataset": name,
            "total": len(images),
            "captioned": captioned,
            "images": [entry.to_dict() for entry in entries],
            "next_cursor": entries[-1].image if more and entries else None,
        }

    def set(self, name: str, image: str, caption: object) -> dict[str, Any]:
        """Write one image's caption atomically; InvalidInput for a caption that is not text or too long."""
        path = self.image_path(name, image)
        if not isinstance(caption, str):
            raise InvalidInput("caption", "must be a string")
        text = caption.rstrip("\r\n")
        if "\x00" in text:
            raise InvalidInput("caption", "must not contain a NUL character")
        if len(text) > MAX_CAPTION_CHARS:
            raise InvalidInput("caption", f"is {len(text)} characters long; the limit is {MAX_CAPTION_CHARS}")
        atomic_write_text(caption_file(path), text + "\n")
        return CaptionedImage(image, text, path.stat().st_size).to_dict()

    def thumbnail(self, name: str, image: str, size: int) -> bytes:
        """The image scaled to fit size x size (aspect kept, never enlarged) as JPEG bytes."""
        if not MIN_THUMBNAIL <= size <= MAX_THUMBNAIL:
            raise InvalidInput("size", f"must be between {MIN_THUMBNAIL} and {MAX_THUMBNAIL}")
        from PIL import Image, ImageOps

        path = self.image_path(name, image)
        buffer = io.BytesIO()
        try:
            with Image.open(path) as opened:
                opened.draft("RGB", (size, size))  # JPEGs decode at a reduced scale: fast for big photos
                picture = ImageOps.exif_transpose(opened)
                picture.thumbnail((size, size))
                picture.convert("RGB").save(buffer, format="JPEG", quality=85)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            # A file whose header passed the upload check but does not decode, or one of absurd dimensions.
            raise InvalidInput("image", f"'{image}' could not be decoded for a preview ({type(exc).__name__})") from exc
        return buffer.getvalue()

    @staticmethod
    def content_type(path: Path) -> str:
        """The media type of a dataset image, by its suffix (uploads made the suffix match the bytes)."""
        return _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
