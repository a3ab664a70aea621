"""Anchor for P2: a bare FastAPI app whose one route reads one job row from an SQLite file with `sqlite3`.

What a competent engineer writes for "return this row as JSON": one connection opened at start-up, the row
read on the event loop (a primary-key read in WAL mode takes microseconds), JSON columns decoded, 404 when
missing. No auth, no middleware. Served by bench/bench_status.py with the same uvicorn as lorapod:
    ANCHOR_DB=/path/to/lorapod.db python -m uvicorn bench.anchors.bare_sqlite_route:app --port 8001
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from fastapi import FastAPI, HTTPException

JSON_COLUMNS = ("params", "config", "artifacts", "webhook")

db = sqlite3.connect(os.environ["ANCHOR_DB"], check_same_thread=False)
db.row_factory = sqlite3.Row
db.execute("PRAGMA journal_mode=WAL")

app = FastAPI()


@app.get("/jobs/{job_id}")
async def get_job(job_id: str) -> dict[str, Any]:
    """The job's row as a JSON object."""
    row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise HTTPException(status_code=404, detail=f"no job with id '{job_id}'")
    job = dict(row)
    for column in JSON_COLUMNS:
        if job[column] is not None:
            job[column] = json.loads(job[column])
    return job
