"""`lorapod`: the command line of a person or a script, against a pod (--url) or a RunPod endpoint (--endpoint).

Keys come from the environment (LORAPOD_API_KEY, RUNPOD_API_KEY) or a 0600 config file, never from a flag, so
they stay out of shell history. `lorapod serve` and `lorapod migrate` run the server itself.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from lorapod_cli.actions import Backend, dataset_files, fetch_artifacts
from lorapod_cli.config import resolve_target
from lorapod_cli.endpoint import EndpointBackend
from lorapod_cli.errors import CliError, ExitCode
from lorapod_cli.render import job_table, jobs_table
from lorapod_cli.rest import RestBackend
from lorapod_cli.watch import Watch, follow_json

app = typer.Typer(
    name="lorapod",
    help="Train LoRAs on a lorapod pod or RunPod endpoint, follow them live, download the results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
F = TypeVar("F", bound=Callable[..., Any])

Url = Annotated[
    str | None, typer.Option("--url", envvar="LORAPOD_URL", help="A pod's REST API, e.g. http://127.0.0.1:8000.")
]
Endpoint = Annotated[
    str | None, typer.Option("--endpoint", envvar="LORAPOD_ENDPOINT", help="A RunPod endpoint id (RUNPOD_API_KEY).")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def console() -> Console:
    """Where people-facing output goes (stderr for bars and notes keeps stdout clean for --json)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def emit(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


def handled(func: F) -> F:
    """Report a CliError in one line on stderr and exit with its code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CliError as exc:
            console().print(f"[red]lorapod: error:[/] {exc.message}", markup=True, highlight=False)
            raise typer.Exit(int(exc.code)) from None

    return wrapper  # type: ignore[return-value]


def backend(url: str | None, endpoint: str | None) -> Backend:
    """The client of the chosen target."""
    target = resolve_target(url, endpoint)
    if target.endpoint:
        return EndpointBackend(target.endpoint, str(target.api_key))
    return RestBackend(str(target.url), target.api_key)


def exit_for(job: dict[str, Any]) -> None:
    """Exit 1 when the job failed or was cancelled."""
    if job.get("status") in ("failed", "cancelled"):
        raise typer.Exit(int(ExitCode.job_failed))


def follow(client: Backend, job: dict[str, Any], *, as_json: bool, show_logs: bool) -> dict[str, Any]:
    """Follow a job to its end with the live bar (or JSON lines); Ctrl-C stops watching, not the job."""
    job_id = str(job["id"])
    out = console()
    try:
        if as_json:
            final = follow_json(client.events(job_id))
        else:
            final = Watch(out, job, show_logs=show_logs).follow(client.events(job_id))
    except KeyboardInterrupt:
        out.print(f"\nstopped watching; {job_id} goes on (follow it again: lorapod logs {job_id} -f)")
        raise typer.Exit(int(ExitCode.interrupted)) from None
    if not as_json:
        status = final.get("status")
        colour = "green" if status == "completed" else "red"
        error = f": {final['error']}" if final.get("error") else ""
        out.print(f"[{colour}]{job_id} {status}[/]{error}")
    return final


@app.command()
@handled
def health(url: Url = None, endpoint: Endpoint = None, as_json: Json = False) -> None:
    """Show the server's health: GPUs, ai-toolkit, disk, database, queue."""
    report = backend(url, endpoint).health()
    if as_json:
        emit(report)
    else:
        console().print_json(json.dumps(report, default=str))
    if report.get("status") not in (None, "ok"):
        raise typer.Exit(int(ExitCode.unreachable))


@app.command()
@handled
def upload(
    source: Annotated[Path, typer.Argument(metavar="DIR", help="A folder of images and .txt captions, or a .zip.")],
    name: Annotated[str, typer.Option("--name", "-n", help="The dataset's name.")],
    url: Url = None,
    endpoint: Endpoint = None,
    as_json: Json = False,
) -> None:
    """Upload a dataset: images and their same-name .txt captions, or a zip."""
    summary = backend(url, endpoint).upload(name, dataset_files(source))
    if as_json:
        emit(summary)
        return
    out = console()
    out.print(
        f"dataset [bold]{summary.get('dataset', name)}[/]: {len(summary.get('saved', []))} files saved, "
        f"{summary.get('images')} images, {summary.get('captions')} captions"
    )
    for skipped in summary.get("skipped", []):
        out.print(f"[yellow]skipped[/] {skipped}")


@app.command()
@handled
def train(
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="The dataset (its name).")] = None,
    trigger: Annotated[str | None, typer.Option("--trigger", "-t", help="The trigger word.")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    base_model: Annotated[str | None, typer.Option(help="sd15, sdxl, flux-dev, … or a Hub id.")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps.")] = None,
    sample_every: Annotated[int | None, typer.Option(help="Samples every N steps.")] = None,
    sample_prompt: Annotated[list[str] | None, typer.Option(help="A sample prompt (repeatable).")] = None,
    name: Annotated[str | None, typer.Option(help="The LoRA's name; default the dataset's.")] = None,
    yaml_file: Annotated[Path | None, typer.Option("--yaml", help="A whole ai-toolkit config instead.")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow it live to the end.")] = False,
    url: Url = None,
    endpoint: Endpoint = None,
    as_json: Json = False,
) -> None:
    """Start a training from simple parameters (or --yaml); --watch follows it with a live bar."""
    if yaml_file is not None:
        try:
            body: dict[str, Any] = {"type": "train_with_yaml", "yaml_config": yaml_file.read_text()}
        except OSError as exc:
            raise CliError(f"--yaml: cannot read {yaml_file}: {exc.strerror}", ExitCode.usage) from exc
    else:
        if not dataset:
            raise CliError("--dataset: required (or give --yaml)", ExitCode.usage)
        options = {
            "trigger_word": trigger,
            "steps": steps,
            "base_model": base_model,
            "rank": rank,
            "learning_rate": lr,
            "save_every": save_every,
            "sample_every": sample_every,
            "sample_prompts": sample_prompt or None,
            "name": name,
        }
        body = {"type": "train", "training_name": dataset, **{k: v for k, v in options.items() if v is not None}}
    client = backend(url, endpoint)
    job = client.submit(body)
    if not watch:
        if as_json:
            emit(job)
        else:
            console().print(f"started [bold]{job['id']}[/] ({job['status']}); follow it: lorapod logs {job['id']} -f")
        return
    final = follow(client, job, as_json=as_json, show_logs=False)
    exit_for(final)


@app.command()
@handled
def jobs(
    status: Annotated[str | None, typer.Option(help="queued, running, completed, failed or cancelled.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
    url: Url = None,
    endpoint: Endpoint = None,
    as_json: Json = False,
) -> None:
    """List jobs, newest first."""
    found = backend(url, endpoint).jobs(status, limit)
    if as_json:
        emit(found)
    else:
        console().print(jobs_table(found))


@app.command()
@handled
def show(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    url: Url = None,
    endpoint: Endpoint = None,
    as_json: Json = False,
) -> None:
    """Show one job: status, progress, loss, artifacts (exit 1 when it failed or was cancelled)."""
    client = backend(url, endpoint)
    job = client.job(job_id)
    if as_json:
        emit({**job, "metrics": client.metrics(job_id)} if job.get("type") == "train" else job)
    else:
        console().print(job_table(job))
    exit_for(job)


@app.command()
@handled
def logs(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    follow_live: Annotated[bool, typer.Option("--follow", "-f", help="Follow live with a bar, to the end.")] = False,
    tail: Annotated[int, typer.Option(min=1, max=10_000, help="Lines to show (without -f).")] = 50,
    url: Url = None,
    endpoint: Endpoint = None,
    as_json: Json = False,
) -> None:
    """Print a job's log; -f follows it live with the progress bar (Ctrl-C stops watching, not the job)."""
    client = backend(url, endpoint)
    if not follow_live:
        text = client.log_tail(job_id, tail)
        if as_json:
            emit({"id": job_id, "lines": text.splitlines()})
        else:
            sys.stdout.write(text)
        return
    final = follow(client, client.job(job_id), as_json=as_json, show_logs=True)
    exit_for(final)


@app.command()
@handled
def cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    save: Annotated[bool, typer.Option("--save", help="Save a checkpoint before stopping (newer servers).")] = False,
    url: Url = None,
    endpoint: Endpoint = None,
    as_json: Json = False,
) -> None:
    """Cancel a queued or running job."""
    job = backend(url, endpoint).cancel(job_id, save)
    if as_json:
        emit(job)
    else:
        console().print(f"{job['id']}: {job['status']}{' (cancel requested)' if job.get('cancel_requested') else ''}")


@app.command()
@handled
def download(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    all_files: Annotated[bool, typer.Option("--all", help="Every artifact, not only the LoRA.")] = False,
    artifact: Annotated[str | None, typer.Option("--name", help="One artifact by its name.")] = None,
    out_dir: Annotated[Path, typer.Option("-o", "--output", help="Folder to save into.")] = Path("."),
    url: Url = None,
    endpoint: Endpoint = None,
    as_json: Json = False,
) -> None:
    """Download a job's LoRA (or --all, or --name); an interrupted download resumes; the sha256 is checked."""
    client = backend(url, endpoint)
    listed = [a for a in client.artifacts(job_id) if a.get("kind") != "log"]
    if artifact:
        chosen = [a for a in listed if a["name"] == artifact]
        if not chosen:
            raise CliError(f"--name: job {job_id} has no artifact {artifact!r}", ExitCode.not_found)
    elif all_files:
        chosen = listed
    else:
        chosen = [a for a in listed if a.get("kind") in ("lora", "image")]
        if not chosen:
            raise CliError(f"job {job_id} has no LoRA yet (use --all or --name for checkpoints)", ExitCode.not_found)
    saved = fetch_artifacts(client, job_id, chosen, out_dir, quiet=as_json)
    if as_json:
        emit(saved)
        return
    for item in saved:
        resumed = f", resumed at {item['resumed_from']} bytes" if item["resumed_from"] else ""
        console().print(f"saved {item['path']} ({item['size']} bytes, sha256 {item['sha256'][:16]}…{resumed})")


@app.command()
@handled
def generate(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What to draw.")],
    lora: Annotated[str | None, typer.Option(help="A training's id, or a LoRA file name.")] = None,
    base_model: Annotated[str | None, typer.Option(help="Default: the LoRA's base model.")] = None,
    model_family: Annotated[str | None, typer.Option(help="sd15, sdxl, flux… for a local model folder.")] = None,
    num_images: Annotated[int | None, typer.Option(help="Images to make.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed, for repeatable images.")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps.")] = None,
    width: Annotated[int | None, typer.Option()] = None,
    height: Annotated[int | None, typer.Option()] = None,
    out_dir: Annotated[Path | None, typer.Option("-o", "--output", help="Folder; default ./<job id>.")] = None,
    url: Url = None,
    endpoint: Endpoint = None,
    as_json: Json = False,
) -> None:
    """Generate images (with a LoRA), wait, and save them."""
    options = {
        "lora": lora,
        "base_model": base_model,
        "model_family": model_family,
        "num_images": num_images,
        "seed": seed,
        "steps": steps,
        "width": width,
        "height": height,
    }
    body = {"type": "generate", "prompt": prompt, **{k: v for k, v in options.items() if v is not None}}
    client = backend(url, endpoint)
    job = client.submit(body)
    final = follow(client, job, as_json=as_json, show_logs=False) if not as_json else _quiet_wait(client, job)
    if final.get("status") != "completed":
        if as_json:
            emit(final)
        exit_for(final)
    images = [a for a in client.artifacts(str(job["id"])) if a.get("kind") == "image"]
    saved = fetch_artifacts(client, str(job["id"]), images, out_dir or Path(str(job["id"])), quiet=as_json)
    if as_json:
        emit({"id": job["id"], "status": "completed", "images": saved})
    else:
        for item in saved:
            console().print(f"saved {item['path']}")


def _quiet_wait(client: Backend, job: dict[str, Any]) -> dict[str, Any]:
    """Wait for the end without printing (for --json, whose stdout holds one document)."""
    final = dict(job)
    for event in client.events(str(job["id"])):
        if event.name == "end":
            final.update(event.data)
    return final


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address; default LORAPOD_HOST (127.0.0.1 without a key).")] = None,
    port: Annotated[int | None, typer.Option(help="Port; default LORAPOD_PORT (8000).")] = None,
    log_level: Annotated[
        str | None, typer.Option(help="critical, error, warning, info or debug; default LORAPOD_LOG_LEVEL (info).")
    ] = None,
) -> None:
    """Run the server: the REST API, the dashboard and the RunPod-compatible routes."""
    from app.cli import serve as run_server
    from core.settings import get_settings

    settings = get_settings()
    if log_level:
        if log_level not in ("critical", "error", "warning", "info", "debug"):
            raise typer.BadParameter("must be critical, error, warning, info or debug", param_hint="--log-level")
        settings = settings.model_copy(update={"log_level": log_level})
    raise typer.Exit(run_server(settings, host, port))


@app.command()
def migrate() -> None:
    """Create the workspace and bring the database schema up to date."""
    from app.cli import migrate as run_migrations
    from core.settings import get_settings

    raise typer.Exit(run_migrations(get_settings()))


def main() -> None:
    """Entry point of the `lorapod` script."""
    app()
