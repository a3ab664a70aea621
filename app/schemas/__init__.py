"""The REST adapter's response models: what every JSON route answers, with the examples /docs shows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    """A documented response shape that passes through keys the core adds beyond the documented ones."""

    # Responses are built by the core as dicts; a key the core adds later must reach callers, not be dropped
    # silently by FastAPI's response filtering, so undocumented keys pass through.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def examples(*values: dict[str, Any]) -> ConfigDict:
    """A model config carrying its examples, with undocumented keys passed through as in Schema."""
    return ConfigDict(extra="allow", populate_by_name=True, json_schema_extra={"examples": list(values)})
