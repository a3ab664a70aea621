"""/datasets: upload training images and captions (files or zips), list, inspect and delete datasets."""

from __future__ import annotations

import itertools
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from app.deps import DatasetsDep, body_limited_route
from app.errors import error_responses
from app.multipart import FileParts, body_puller, is_multipart
from app.schemas.datasets import Dataset, DatasetList, UploadSummary
from core.errors import InvalidInput
from core.storage.datasets import DatasetStore

# The limit is checked on Content-Length before a byte is read, and on the bytes as they stream in.
router = APIRouter(
    tags=["datasets"],
    route_class=body_limited_route(lambda s: s.max_upload_bytes, field="files"),
)

DatasetName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        description="The dataset's name (the `training_name` of a training): letters, digits, `.`, `_`, `-`.",
    ),
]
# Files a single request may carry; a zip counts as one (its entries have their own limit).
MAX_FILES_PER_REQUEST = 1000
FILES_REQUIRED = "is required: send one or more multipart file fields named 'files'"


@router.post(
    "/datasets/{name}/files",
    summary="Upload images and captions",
    description=(
        "Send any number of files in the multipart field `files` (`curl -F files=@img_01.png -F "
        "files=@img_01.txt -F files=@more.zip`). Files are streamed to disk; the dataset is created if "
        "needed, and a file with the same name is replaced.\n\n"
        "- A file is an image only if its bytes say so (PNG, JPEG, WebP), whatever its name; a name that "
        "lies is corrected (`renamed`), a file that is no image is `skipped` with the reason.\n"
        "- Captions are `.txt` (or `.caption`) UTF-8 files with the image's name.\n"
        "- A `.zip` is unpacked after every entry is checked: an entry climbing out of the dataset, a link, "
        "an encrypted entry, or more entries or bytes than the limits refuse the whole archive.\n"
        "- The whole request may be at most `LORAPOD_MAX_UPLOAD_BYTES` (413, nothing kept); one file at "
        "most `LORAPOD_MAX_FILE_BYTES` (skipped)."
    ),
    response_model=UploadSummary,
    responses={
        200: {"description": "What was saved, skipped and renamed, and the dataset's counts after the upload."},
        **error_responses(400, 401, 413, 422, fields=("name", "files")),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "description": "Images, captions and zips.",
                            }
                        },
                        "required": ["files"],
                    }
                }
            },
        }
    },
)
async def upload_files(request: Request, datasets: DatasetsDep, name: DatasetName) -> dict[str, Any]:
    """Upload images and captions."""
    datasets.folder(name)  # refuse a bad name before reading the body
    if not is_multipart(request):
        raise InvalidInput("files", FILES_REQUIRED)
    parts = FileParts(
        request.headers["content-type"],
        body_puller(request),
        field="files",
        max_files=MAX_FILES_PER_REQUEST,
        max_fields=MAX_FILES_PER_REQUEST,
    )
    return await run_in_threadpool(_save_parts, datasets, name, parts)


def _save_parts(datasets: DatasetStore, name: str, parts: FileParts) -> dict[str, Any]:
    """Each file part goes into the dataset's staging as it arrives (in a worker thread: parsing and disk writes)."""
    files = iter(parts)
    first = next(files, None)
    if first is None:
        raise InvalidInput("files", FILES_REQUIRED)
    return datasets.save_files(name, itertools.chain([first], files)).to_dict()


@router.get(
    "/datasets",
    summary="List datasets",
    description="Every dataset with its counts, unpaired images and captions, size and past skips (no file list).",
    response_model=DatasetList,
    responses={200: {"description": "The datasets, by name."}, **error_responses(401)},
)
def list_datasets(datasets: DatasetsDep) -> dict[str, Any]:
    """List datasets."""
    return {"data": [{k: v for k, v in info.to_dict().items() if k != "files"} for info in datasets.list()]}


@router.get(
    "/datasets/{name}",
    summary="Inspect a dataset",
    description=(
        "Images, captions, images without caption, captions without image, every file with its size, and "
        "the files earlier uploads skipped and why."
    ),
    response_model=Dataset,
    responses={200: {"description": "The dataset."}, **error_responses(401, 404, 422, fields=("name",))},
)
def get_dataset(datasets: DatasetsDep, name: DatasetName) -> dict[str, Any]:
    """Inspect a dataset."""
    return datasets.get(name).to_dict()


@router.delete(
    "/datasets/{name}",
    status_code=204,
    summary="Delete a dataset",
    description="Remove the dataset folder with all its files.",
    responses={204: {"description": "Deleted."}, **error_responses(401, 404, 422, fields=("name",))},
)
def delete_dataset(datasets: DatasetsDep, name: DatasetName) -> Response:
    """Delete a dataset."""
    datasets.delete(name)
    return Response(status_code=204)


@router.delete(
    "/datasets/{name}/files/{path:path}",
    status_code=204,
    summary="Delete one file of a dataset",
    description="Remove one file, given relative to the dataset (e.g. `portraits/img_02.jpg`).",
    responses={204: {"description": "Deleted."}, **error_responses(401, 404, 422, fields=("name", "path"))},
)
def delete_dataset_file(
    datasets: DatasetsDep,
    name: DatasetName,
    path: Annotated[str, Path(max_length=1024, description="The file, relative to the dataset.")],
) -> Response:
    """Delete one file of a dataset."""
    datasets.delete_file(name, path)
    return Response(status_code=204)
