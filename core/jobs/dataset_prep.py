"""With a bucket, a training's datasets are brought onto this worker's disk before it is built and again
before it starts (the bucket is the truth; an unchanged local copy is reused, not downloaded again)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from core.jobs.requests import JobRequest, TrainRequest, TrainYamlRequest
from core.jobs.rows import Job
from core.storage.bucket_datasets import BucketDatasetStore
from core.storage.datasets import DatasetStore
from core.storage.workspace import Workspace

# A YAML config names its datasets by path; those under training_data/ are lorapod's (and the bucket's).
_DATASET_IN_YAML = re.compile(r"training_data/([A-Za-z0-9._-]+)")


def datasets_of_request(request: JobRequest) -> list[str]:
    """The lorapod datasets a job request trains on (none for a generation)."""
    if isinstance(request, TrainRequest):
        return [request.training_name]
    if isinstance(request, TrainYamlRequest):
        return sorted(set(_DATASET_IN_YAML.findall(request.text)))
    return []


def datasets_of_job(job: Job, workspace: Workspace) -> list[str]:
    """The lorapod datasets a queued training's stored config reads."""
    process = (job.config.get("ai_toolkit", {}).get("config", {}).get("process") or [{}])[0]
    folders = [Path(str(entry.get("folder_path", ""))) for entry in process.get("datasets", [])]
    return [folder.name for folder in folders if folder.parent == workspace.training_data]


def materialise(datasets: DatasetStore, names: Iterable[str], *, missing_ok: bool) -> None:
    """Make each named dataset's local copy equal to the bucket's (blocking; a no-op without a bucket).

    missing_ok: a dataset the bucket does not have loses its local leftovers (the submit then says it does not
    exist); otherwise NotFound names it.
    """
    if isinstance(datasets, BucketDatasetStore):
        for name in names:
            datasets.materialise(name, missing_ok=missing_ok)
