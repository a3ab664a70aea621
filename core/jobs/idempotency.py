"""Idempotency-Key reuse: the same key with the same request returns the first job; with another, it is refused."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel

from core.errors import InvalidInput
from core.jobs.rows import Job


def request_fingerprint(request: BaseModel) -> str:
    """sha256 of the request's canonical JSON (every field, defaults included, keys sorted)."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def same_request(existing: Job, new: Job) -> Job:
    """The stored job when it answers the same request; InvalidInput when the key came with another body."""
    if existing.id == new.id or existing.request_hash is None or existing.request_hash == new.request_hash:
        return existing  # jobs stored before fingerprints existed cannot be compared; they keep the old answer
    raise InvalidInput(
        "Idempotency-Key",
        f"was already used for job {existing.id} with a different request; use a new key for a new request",
    )


def keyed(job: Job, key: str | None, request: str) -> Job:
    """The job carrying an Idempotency-Key and the fingerprint of a request given as text (resume, retry)."""
    if key:
        job.idempotency_key = key
        job.request_hash = hashlib.sha256(request.encode()).hexdigest()
    return job
