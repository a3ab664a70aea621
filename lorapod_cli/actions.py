"""What some commands do besides talking to the server: pick the files of a dataset, save artifacts to disk."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from rich.console import Console

from lorapod_cli.endpoint import EndpointBackend
from lorapod_cli.errors import CliError, ExitCode
from lorapod_cli.rest import RestBackend
from lorapod_cli.transfer import download as fetch_to_file
from lorapod_cli.transfer import safe_relative

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
CAPTION_SUFFIXES = {".txt", ".caption"}
Backend = RestBackend | EndpointBackend


def dataset_files(source: Path) -> list[Path]:
    """The files to upload: a zip as it is, or a folder's images and captions."""
    if source.is_file():
        if source.suffix.lower() != ".zip":
            raise CliError(f"DIR: {source} is a file but not a .zip", ExitCode.usage)
        return [source]
    if not source.is_dir():
        raise CliError(f"DIR: {source} does not exist", ExitCode.usage)
    wanted = IMAGE_SUFFIXES | CAPTION_SUFFIXES
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in wanted and p.name[0] != ".")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        raise CliError(f"DIR: {source} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})", ExitCode.usage)
    return files


def fetch_artifacts(
    client: Backend, job_id: str, artifacts: list[dict[str, Any]], out_dir: Path, *, quiet: bool
) -> list[dict[str, Any]]:
    """Download artifacts into out_dir (resuming, verified); their records with local paths."""
    results = []
    for artifact in artifacts:
        name = str(artifact["name"])
        dest = out_dir / safe_relative(name)
        if isinstance(client, RestBackend):
            fetch = functools.partial(client.download, str(artifact["url"]), dest)
        else:
            fetch = functools.partial(client.download, job_id, name)
        saved = fetch_to_file(dest, fetch, Console(stderr=True, soft_wrap=True), quiet=quiet)
        results.append({"name": name, "kind": artifact.get("kind"), **saved})
    return results
