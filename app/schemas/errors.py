"""The one error body every route answers with: `{"error": "<field>: <reason>", "field": "<field>"}`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """An error: one sentence naming the field and the reason, and the field when there is one."""

    model_config = ConfigDict(
        title="Error",
        json_schema_extra={"examples": [{"error": "job_id: no job with id 'train_ab12cd34ef56'", "field": "job_id"}]},
    )

    error: str = Field(description="One sentence: the field and the reason.")
    field: str | None = Field(
        default=None,
        description="The request field at fault, named as in this route's parameters or body; absent when none is.",
    )
