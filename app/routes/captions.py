"""/datasets/{name}/captions and /images: every image with its caption (paged), one caption edited, previews."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.deps import body_limited_route
from app.errors import error_responses
from app.schemas.captions import CaptionedImage, CaptionPage
from core.jobs.service import JobService
from core.storage.captions import MAX_PAGE, MAX_THUMBNAIL, MIN_THUMBNAIL, CaptionStore
from gpu.caption_protocol import MAX_CAPTION_CHARS

# A caption is at most MAX_CAPTION_CHARS characters: four UTF-8 bytes each, plus the JSON around it.
router = APIRouter(
    tags=["datasets"],
    route_class=body_limited_route(lambda _s: MAX_CAPTION_CHARS * 6 + 1024, field="caption"),
)

DatasetName = Annotated[
    str, Path(min_length=1, max_length=64, description="The dataset's name (the `training_name` of a training).")
]
ImageName = Annotated[
    str, Path(min_length=1, max_length=1024, description="The image, relative to the dataset (`portraits/a.jpg`).")
]


class CaptionBody(BaseModel):
    """One caption."""

    model_config = ConfigDict(extra="forbid")

    caption: str = Field(..., description=f"The caption text, at most {MAX_CAPTION_CHARS} characters.")


def _captions(request: Request) -> CaptionStore:
    service: JobService = request.app.state.service
    return service.captions


@router.get(
    "/datasets/{name}/captions",
    summary="List images with their captions",
    description=(
        "Every image of the dataset with its caption (`null` when it has none), ordered by path, `limit` per "
        "page; pass `next_cursor` back as `cursor` for the next page (null on the last). `captioned` counts "
        "the images that have a caption. Start a caption job (`POST /jobs` with `type: caption`) to fill the "
        "missing ones."
    ),
    response_model=CaptionPage,
    responses={200: {"description": "One page of images."}, **error_responses(401, 404, 422, fields=("name",))},
)
def list_captions(
    request: Request,
    name: DatasetName,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Images per page.")] = 100,
    cursor: Annotated[str | None, Query(max_length=1024, description="`next_cursor` of the previous page.")] = None,
) -> dict[str, Any]:
    """List images with their captions."""
    return _captions(request).page(name, limit=limit, cursor=cursor)


@router.put(
    "/datasets/{name}/captions/{image:path}",
    summary="Set one image's caption",
    description=(
        "Replace the caption of one image of the dataset (its same-stem `.txt`), written atomically: a reader "
        f"sees the old caption or the new one. 404 when the image is not in the dataset; 422 for a caption over "
        f"{MAX_CAPTION_CHARS} characters."
    ),
    response_model=CaptionedImage,
    responses={
        200: {"description": "The image and its new caption."},
        **error_responses(400, 401, 404, 413, 422, fields=("name", "image", "caption")),
    },
)
def set_caption(
    request: Request,
    name: DatasetName,
    image: ImageName,
    body: Annotated[CaptionBody, Body(openapi_examples={"edit": {"value": {"caption": "a photo of sks"}}})],
) -> dict[str, Any]:
    """Set one image's caption."""
    return _captions(request).set(name, image, body.caption)


@router.get(
    "/datasets/{name}/images/{image:path}",
    summary="Get an image or its thumbnail",
    description=(
        f"The image itself, or with `size` ({MIN_THUMBNAIL}-{MAX_THUMBNAIL}) a JPEG scaled to fit size x size "
        "(aspect ratio kept, never enlarged) for a preview."
    ),
    response_class=Response,
    responses={
        200: {"description": "The image.", "content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}},
        **error_responses(401, 404, 422, fields=("name", "image", "size")),
    },
)
async def get_image(
    request: Request,
    name: DatasetName,
    image: ImageName,
    size: Annotated[
        int | None, Query(ge=MIN_THUMBNAIL, le=MAX_THUMBNAIL, description="Longest side of the thumbnail.")
    ] = None,
) -> Response:
    """Get an image or its thumbnail."""
    captions = _captions(request)
    if size is None:
        path = await run_in_threadpool(captions.image_path, name, image)
        return FileResponse(path, media_type=captions.content_type(path), headers={"Cache-Control": "no-cache"})
    data = await run_in_threadpool(captions.thumbnail, name, image, size)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})
