"""/openapi.json as a contract: every JSON answer has a named schema, every error is the one documented error
model with the route's own field names, nothing advertises an answer the route cannot give; /docs and /redoc are
served from packaged assets, with the API key set."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.schemas.errors import ErrorBody
from tests.helpers import make_settings

KEY = "contract-test-key"
ERROR_REF = "#/components/schemas/ErrorBody"
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One key-protected app for the module (these tests only read, or fail before writing)."""
    with TestClient(create_app(make_settings(tmp_path_factory.mktemp("contract"), api_key=KEY))) as client:
        yield client


@pytest.fixture(scope="module")
def spec(secured: TestClient) -> dict[str, Any]:
    """The document as served."""
    response = secured.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) for every operation of the document."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def filled(path: str) -> str:
    """The path with every parameter given a value no route knows."""
    return re.sub(r"\{[^}]+\}", "nope", path)


def test_operation_ids_are_unique_names(spec: dict[str, Any]) -> None:
    # They name the generated client's methods (jobs.get_job): one per operation, plain identifiers.
    ids = [operation["operationId"] for _, _, operation in operations(spec)]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in ids), ids


def test_every_json_success_refers_to_a_named_schema(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    checked = 0
    for path, method, operation in operations(spec):
        for code, response in operation["responses"].items():
            if not code.startswith("2"):
                continue
            for media_type, content in response.get("content", {}).items():
                if "json" not in media_type:
                    continue
                checked += 1
                ref = content.get("schema", {}).get("$ref", "")
                where = f"{method.upper()} {path} {code}"
                assert ref.startswith("#/components/schemas/"), f"{where}: {content.get('schema')}"
                named = schemas[ref.rsplit("/", 1)[-1]]
                assert named.get("properties"), f"{where}: {ref} declares no fields"
                assert named.get("examples"), f"{where}: {ref} has no example"
    assert checked >= 18


def test_no_route_advertises_an_error_body_it_cannot_send(spec: dict[str, Any]) -> None:
    # FastAPI's own 422 body ({"detail": [...]}) is never sent: the app answers every error as ErrorBody.
    assert not {"HTTPValidationError", "ValidationError"} & set(spec["components"]["schemas"])
    for path, method, operation in operations(spec):
        where = f"{method.upper()} {path}"
        codes = {code for code in operation["responses"] if code.startswith(("4", "5"))}
        for code in codes:
            content = operation["responses"][code].get("content", {})
            if code == "416":  # the file server's empty range refusal
                assert not content, where
                continue
            assert list(content) == ["application/json"], f"{where} {code}: {list(content)}"
            if (path, code) == ("/health/ready", "503"):  # a probe: "not ready" answers with its own checks
                assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Ready"}, where
                continue
            assert content["application/json"]["schema"] == {"$ref": ERROR_REF}, f"{where} {code}"
            ErrorBody.model_validate(content["application/json"]["example"])
        # 401 exactly where a bearer key is asked for; 422 and 413 only where there is input to refuse.
        assert ("401" in codes) == bool(operation.get("security")), where
        has_input = bool(operation.get("parameters") or operation.get("requestBody"))
        assert "422" not in codes or has_input, f"{where} advertises 422 but takes no input"
        assert "413" not in codes or operation.get("requestBody"), f"{where} advertises 413 but takes no body"


def test_the_bearer_scheme_is_declared_for_the_authorize_button(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert [op.get("security") for path, _, op in operations(spec) if path == "/health"] == [None]


def test_advertised_401s_are_sent_and_the_rest_is_open(secured: TestClient, spec: dict[str, Any]) -> None:
    for path, method, operation in operations(spec):
        if path.endswith("/runsync") or "/stream/" in path:
            continue  # they would wait for a call; the 401 comes first anyway but needs no second proof
        response = secured.request(method.upper(), filled(path))
        where = f"{method.upper()} {path}"
        if operation.get("security"):
            assert response.status_code == 401, where
            assert ErrorBody.model_validate(response.json()).error
        else:
            assert response.status_code != 401, where


@pytest.mark.parametrize(
    ("method", "path", "status", "field"),
    [
        ("GET", "/jobs/nope", 404, "job_id"),
        ("POST", "/jobs/nope/cancel", 404, "job_id"),
        ("DELETE", "/jobs/nope", 404, "job_id"),
        ("GET", "/jobs/nope/artifacts", 404, "job_id"),
        ("GET", "/jobs/nope/logs", 404, "job_id"),
        ("GET", "/jobs/nope/artifacts/lora.safetensors", 404, "job_id"),
        ("GET", "/datasets/nope", 404, "name"),
        ("DELETE", "/datasets/nope", 404, "name"),
        ("DELETE", "/datasets/nope/files/a.png", 404, "name"),
        ("GET", "/datasets/-dash", 422, "name"),
        ("GET", "/jobs/" + "x" * 65, 422, "job_id"),
        ("GET", "/jobs?limit=0", 422, "limit"),
    ],
)
def test_rest_errors_name_the_routes_own_fields(
    secured: TestClient, method: str, path: str, status: int, field: str, spec: dict[str, Any]
) -> None:
    response = secured.request(method, path, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == status, response.text
    body = ErrorBody.model_validate(response.json())
    assert set(response.json()) == {"error", "field"}
    assert body.field == field
    assert "process_id" not in body.error and "training_name" not in body.error
    # The field is one the route's documentation names.
    template = next(p for p in spec["paths"] if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/?]+", p), path.split("?")[0]))
    documented = spec["paths"][template][method.lower()]["responses"][str(status)]["description"]
    assert f"`{field}`" in documented, documented


def test_a_body_field_keeps_its_name(secured: TestClient) -> None:
    # Renaming applies to path parameters only: a training's dataset is still `training_name` in its body.
    response = secured.post(
        "/jobs", json={"type": "train", "training_name": "nope"}, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 422 and response.json()["field"] == "training_name"


def test_contract_errors_keep_the_contracts_names(secured: TestClient) -> None:
    # The RunPod-compatible routes speak the contract: its error names are not the REST adapter's.
    auth = {"Authorization": f"Bearer {KEY}"}
    response = secured.post(
        "/v2/ep/runsync", json={"input": {"type": "process_status", "process_id": "nope"}}, headers=auth
    )
    assert response.status_code == 200
    assert response.json()["status"] == "FAILED" and response.json()["error"].startswith("process_id: ")


@pytest.mark.parametrize(
    ("page", "asset_pattern"), [("/docs", r"swagger-ui-bundle\.js"), ("/redoc", r"redoc\.standalone\.js")]
)
def test_docs_pages_load_only_packaged_assets(secured: TestClient, page: str, asset_pattern: str) -> None:
    html = secured.get(page)  # open, like /openapi.json: the key is typed into the page, not needed to load it
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    # The browser is told to load nothing from another host (ReDoc's footer would fetch a logo from a CDN).
    assert "default-src 'self'" in html.headers["content-security-policy"]
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html.text)
    assert urls and all(url.startswith("/") for url in urls), urls
    assert re.search(asset_pattern, html.text)
    for url in urls:
        asset = secured.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
