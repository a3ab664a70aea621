"""A property-based run over the app's own OpenAPI schema (schemathesis): no request, however odd, gets a 5xx, and
every answer is one the document lists, in its content type and schema."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from tests.fakes.trainer import make_dataset
from tests.helpers import make_settings

# Operations that wait for a job to finish: with no GPU slot in this run they would only wait out their timeout.
LONG_POLLING = r"/runsync$|/stream/"
# Created by the app only when its lifespan starts, so merely collecting this module leaves nothing behind.
WORKSPACE = Path(tempfile.gettempdir()) / f"lorapod-fuzz-{os.getpid()}"


def fuzz_app() -> FastAPI:
    """The app on a scratch workspace with a dataset, whose scheduler has no slots: valid jobs stay queued."""
    app = create_app(make_settings(WORKSPACE))
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        async with started(application):
            service = application.state.service
            # Generated requests that pass validation queue real jobs; nothing may spawn trainers here.
            service.scheduler.slots.clear()
            make_dataset(service.workspace.training_data / "faces", 2)
            yield

    app.router.lifespan_context = lifespan
    return app


APP = fuzz_app()
# Loaded from the app object, not over HTTP: the lifespan starts with the first generated request.
schema = schemathesis.openapi.from_dict(APP.openapi())
schema.app = APP


@pytest.fixture(scope="module", autouse=True)
def _stop_app() -> Iterator[None]:
    yield
    asgi.shutdown_lifespans()
    shutil.rmtree(WORKSPACE, ignore_errors=True)


@schema.exclude(path_regex=LONG_POLLING).parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_no_request_gets_a_server_error(case: schemathesis.Case) -> None:
    response = case.call(timeout=30)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    # And the document tells the truth: the status is one the operation lists, with its content type and schema.
    case.validate_response(
        response, checks=[status_code_conformance, content_type_conformance, response_schema_conformance]
    )


REST_TAGS = {"jobs", "datasets", "models", "files", "health"}


def _named_schema(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The component a `$ref` points at, or the schema itself."""
    ref = schema.get("$ref", "")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def test_every_rest_operation_is_documented() -> None:
    # /docs is the manual: each operation says what it does, shows an example and lists its errors.
    spec = APP.openapi()
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if not REST_TAGS & set(operation.get("tags", [])):
                continue
            checked += 1
            where = f"{method.upper()} {path}"
            assert operation.get("summary") and len(operation.get("description", "")) > 40, where
            contents = [c for r in operation["responses"].values() for c in r.get("content", {}).values()]
            contents += list(operation.get("requestBody", {}).get("content", {}).values())
            # Examples live in the media type or, for response models, in the named schema itself.
            schemas = [_named_schema(spec, c.get("schema", {})) for c in contents]
            assert any("example" in c or "examples" in c for c in contents + schemas), f"{where} has no example"
            codes = set(operation["responses"])
            if path not in ("/health", "/health/live", "/health/ready"):  # open: people and probes
                assert "401" in codes, f"{where} does not document 401"
            if "{" in path:
                assert "422" in codes, f"{where} does not document 422"
            if "{" in path and method in ("get", "delete"):
                assert "404" in codes, f"{where} does not document 404"
    assert checked >= 20
