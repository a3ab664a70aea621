"""A dataset's images with their captions, as the caption routes answer them."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.schemas import Schema, examples

CAPTIONED_EXAMPLE: dict[str, Any] = {
    "image": "img_01.png",
    "caption": "a photo of sks on a beach",
    "has_caption": True,
    "size": 524288,
}
PAGE_EXAMPLE: dict[str, Any] = {
    "dataset": "my_dataset",
    "total": 3,
    "captioned": 2,
    "images": [
        CAPTIONED_EXAMPLE,
        {"image": "img_02.png", "caption": None, "has_caption": False, "size": 498112},
    ],
    "next_cursor": "img_02.png",
}


class CaptionedImage(Schema):
    """One image of a dataset and its caption (its same-stem `.txt`)."""

    model_config = examples(CAPTIONED_EXAMPLE)

    image: str = Field(description="The image, relative to the dataset.")
    caption: str | None = Field(description="The caption text; null when the image has none.")
    has_caption: bool
    size: int = Field(description="The image's bytes.")


class CaptionPage(Schema):
    """One page of a dataset's images with their captions, ordered by path."""

    model_config = examples(PAGE_EXAMPLE)

    dataset: str
    total: int = Field(description="Images in the dataset.")
    captioned: int = Field(description="Images that have a caption.")
    images: list[CaptionedImage]
    next_cursor: str | None = Field(description="Pass back as `cursor` for the next page; null on the last.")
