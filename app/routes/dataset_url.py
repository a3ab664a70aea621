"""POST /datasets/{name}/url: a dataset zip fetched from an https:// or s3:// URL (in its own module so the
multipart upload routes stay as they are)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.deps import ServiceDep
from app.errors import error_responses
from app.routes.datasets import DatasetName
from app.schemas.datasets import UploadSummary

router = APIRouter(tags=["datasets"])


class DatasetUrlBody(BaseModel):
    """Where the zip is."""

    model_config = ConfigDict(extra="forbid")

    dataset_url: str = Field(
        ...,
        min_length=1,
        max_length=4096,
        description="An https:// URL (a public host) or s3://bucket/key (read with the configured bucket's keys).",
        examples=["https://example.com/my_dataset.zip"],
    )


@router.post(
    "/datasets/{name}/url",
    summary="Add a zip from a URL",
    description=(
        "Fetches the zip at `dataset_url` (at most `LORAPOD_MAX_UPLOAD_BYTES`, else 413) and adds its files "
        "to the dataset with the same checks as an uploaded zip. An https URL must name a public host; an "
        "`s3://bucket/key` URL is read with the configured bucket's credentials. A URL that is not a zip, "
        "cannot be fetched, or whose archive is refused answers 422 naming `dataset_url`."
    ),
    response_model=UploadSummary,
    responses={
        200: {"description": "The upload summary."},
        **error_responses(400, 401, 413, 422, fields=("name", "dataset_url")),
    },
)
def dataset_from_url(service: ServiceDep, name: DatasetName, body: DatasetUrlBody) -> dict[str, Any]:
    """Add a zip from a URL."""
    return service.dataset_from_url(name, body.dataset_url).to_dict()
