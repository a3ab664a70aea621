"""The live bar of `--watch` and `logs -f`: step/total, it/s, ETA, loss and the trainer's phase."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from lorapod_cli.events import Event
from lorapod_cli.render import duration, number

TERMINAL = {"completed", "failed", "cancelled"}


class Watch:
    """Draws one job's events: a bar (and, with show_logs, its log lines above it)."""

    def __init__(self, console: Console, job: dict[str, Any], *, show_logs: bool) -> None:
        self.console = console
        self.show_logs = show_logs
        self.job = job
        self.state: dict[str, Any] = {"phase": job.get("status", "queued"), "loss": None, "rate": None, "eta": None}
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.fields[phase]:<9}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("loss {task.fields[loss]}"),
            console=console,
            refresh_per_second=4,
        )
        self.task: TaskID = self.progress.add_task(
            str(job.get("id")), total=None, phase=self.state["phase"], rate="- it/s", eta="-", loss="-"
        )

    def follow(self, events: Iterable[Event]) -> dict[str, Any]:
        """Draw events until `end`; return the job's last known view (its status says how it ended)."""
        with self.progress:
            for event in events:
                self.apply(event)
                if event.name == "end":
                    self.job = {**self.job, **event.data}
                    break
        return self.job

    def apply(self, event: Event) -> None:
        """Update the bar from one event."""
        data = event.data if isinstance(event.data, dict) else {}
        if event.name == "status":
            self.job = data
            self.state["phase"] = data.get("status", self.state["phase"])
            self._progress(data.get("progress") or {})
        elif event.name == "progress":
            self._progress(data)
        elif event.name == "metrics":
            self.state["phase"] = data.get("phase") or self.state["phase"]
            points = data.get("points") or []
            if points:
                self.state["loss"] = points[-1].get("loss")
        elif event.name == "log" and self.show_logs:
            for line in data.get("lines", []):
                self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        elif event.name == "artifact" and self.show_logs:
            self.progress.console.print(f"[green]+ {data.get('kind')}[/] {data.get('name')}")
        self._redraw()

    def _progress(self, data: dict[str, Any]) -> None:
        if data.get("total_steps"):
            self.progress.update(self.task, total=data["total_steps"], completed=data.get("step") or 0)
        if data.get("loss") is not None:
            self.state["loss"] = data["loss"]
        self.state["rate"], self.state["eta"] = data.get("rate"), data.get("eta_seconds")
        if data.get("status") and data["status"] != "running":
            self.state["phase"] = data["status"]

    def _redraw(self) -> None:
        rate = self.state["rate"]
        rate_text = "- it/s" if rate is None else (f"{rate:.2f} it/s" if rate >= 1 else f"{1 / rate:.2f} s/it")
        self.progress.update(
            self.task,
            phase=self.state["phase"],
            rate=rate_text,
            eta=duration(self.state["eta"]),
            loss=number(self.state["loss"]),
        )
        self.progress.refresh()


def follow_json(events: Iterable[Event]) -> dict[str, Any]:
    """For --json: one JSON object per event on stdout (JSON lines); returns the final job view."""
    job: dict[str, Any] = {}
    for event in events:
        sys.stdout.write(json.dumps({"event": event.name, "data": event.data}, default=str) + "\n")
        sys.stdout.flush()
        if event.name == "status" and isinstance(event.data, dict):
            job = event.data
        if event.name == "end":
            return {**job, **event.data}
    return job
