"""A Python client generated from /openapi.json (openapi-python-client) drives a real server with its typed methods:
upload a dataset, train on the stand-in trainer, wait, list the artifacts, download the LoRA."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.fakes.trainer import make_dataset
from tests.helpers import LiveServer, make_settings

KEY = "generated-client-key"
PACKAGE = "lorapod_client"
GENERATOR = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent)) or shutil.which(
    "openapi-python-client"
)
pytestmark = pytest.mark.skipif(
    GENERATOR is None, reason="openapi-python-client is not installed (pip install -e '.[dev]'; .ci/run has it)"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real server with an API key, on the stand-in trainer."""
    live = LiveServer(make_settings(tmp_path, api_key=KEY)).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def client_package(server: LiveServer, tmp_path: Path) -> Iterator[Any]:
    """The client generated from the running server's /openapi.json, imported."""
    assert GENERATOR is not None
    spec = tmp_path / "openapi.json"
    spec.write_text(httpx.get(f"{server.url}/openapi.json", timeout=30).text)
    config = tmp_path / "generator.json"
    # No post hooks: the generated code is used as generated, without formatting it first.
    config.write_text(json.dumps({"post_hooks": [], "package_name_override": PACKAGE}))
    out = tmp_path / "generated"
    command = [GENERATOR, "generate", "--path", str(spec), "--meta", "none", "--config", str(config)]
    done = subprocess.run(
        [*command, "--output-path", str(out / PACKAGE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def module(name: str) -> ModuleType:
    """One module of the generated package."""
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_generated_client_trains_and_downloads_a_lora(server: LiveServer, client_package: Any, tmp_path: Path) -> None:
    types = module("types")
    models = module("models")
    api = f"{PACKAGE}.api"
    client = client_package.AuthenticatedClient(base_url=server.url, token=KEY, raise_on_unexpected_status=True)

    # Upload a dataset: two images and their captions, as the typed multipart body.
    source = make_dataset(tmp_path / "source", 2)
    files = [
        types.File(payload=BytesIO(path.read_bytes()), file_name=path.name, mime_type="application/octet-stream")
        for path in sorted(source.iterdir())
    ]
    upload = importlib.import_module(f"{api}.datasets.upload_files")
    summary = upload.sync(name="faces", client=client, body=models.UploadFilesBody(files=files))
    assert isinstance(summary, models.UploadSummary), summary
    assert (summary.images, summary.captions, summary.images_without_caption) == (2, 2, [])

    # Start a training on the stand-in trainer.
    submit = importlib.import_module(f"{api}.jobs.submit_job")
    request = models.TrainRequest(training_name="faces", trigger_word="sks", base_model="sd15", steps=6, save_every=3)
    job = submit.sync(client=client, body=request, idempotency_key="generated-client-1")
    assert isinstance(job, models.Job), job
    assert job.type_ == models.JobType.TRAIN and job.status in (models.JobStatus.QUEUED, models.JobStatus.RUNNING)

    # Wait for it with the typed getter (the suite's timeout bounds the wait).
    get_job = importlib.import_module(f"{api}.jobs.get_job")
    finished = {models.JobStatus.COMPLETED, models.JobStatus.FAILED, models.JobStatus.CANCELLED}
    while (current := get_job.sync(job_id=job.id, client=client)).status not in finished:
        time.sleep(0.1)
    assert current.status == models.JobStatus.COMPLETED, current.error
    assert current.progress.step == 6

    # List its artifacts and download the final LoRA.
    listing = importlib.import_module(f"{api}.jobs.list_artifacts").sync(job_id=job.id, client=client)
    assert isinstance(listing, models.ArtifactList), listing
    loras = [a for a in listing.data if a.kind == "lora"]
    assert len(loras) == 1, [a.name for a in listing.data]
    download = importlib.import_module(f"{api}.jobs.download_artifact")
    file = download.sync(job_id=job.id, name=loras[0].name, client=client)
    assert isinstance(file, types.File), file
    content = file.payload.read()
    on_disk = (Path(server.settings.workspace) / loras[0].path).read_bytes()
    assert content == on_disk and len(content) == loras[0].size
    header_length = int.from_bytes(content[:8], "little")  # a safetensors file: 8-byte header length, JSON header
    assert json.loads(content[8 : 8 + header_length])


def test_generated_client_reads_errors_as_the_error_model(server: LiveServer, client_package: Any) -> None:
    models = module("models")
    client = client_package.AuthenticatedClient(base_url=server.url, token=KEY)
    get_job = importlib.import_module(f"{PACKAGE}.api.jobs.get_job")
    error = get_job.sync(job_id="nope", client=client)
    assert isinstance(error, models.Error), error
    assert error.field == "job_id" and "nope" in error.error
    wrong_key = client_package.AuthenticatedClient(base_url=server.url, token="wrong")
    refused = get_job.sync_detailed(job_id="nope", client=wrong_key)
    assert refused.status_code == 401 and isinstance(refused.parsed, models.Error)
