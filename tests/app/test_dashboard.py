"""The dashboard in headless Chromium (Debian's, driven by Playwright) against a real server with an API key and the
stand-in trainer: key entry, drag-and-drop upload, caption preview, a training whose bar and loss chart move, the
LoRA downloaded. Screenshots go to test-screenshots/ (or $LORAPOD_SCREENSHOTS) for a person to look at."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.trainer import make_dataset
from tests.helpers import REPO_ROOT, LiveServer, make_settings
from tests.tools import require_tool

KEY = "dash-key-4242"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Playwright gives each launch a fresh, temporary profile (user data dir) of its own.
DROP_FILES = """(files) => {
  const transfer = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], f.name, { type: f.type }));
  }
  return transfer;
}"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server that needs an API key."""
    live = LiveServer(make_settings(tmp_path, api_key=KEY)).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def page(server: LiveServer) -> Iterator[Any]:
    """A Chromium page; every request URL it makes is recorded."""
    chromium = require_tool("chromium", "the dashboard's browser test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (the dev extra)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.requested = []  # type: ignore[attr-defined]
        page.on("request", lambda request: page.requested.append(request.url))  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            browser.close()


def shots() -> Path:
    folder = Path(os.environ.get("LORAPOD_SCREENSHOTS") or REPO_ROOT / "test-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def until(page: Any, expression: str, timeout: float = 60) -> None:
    """Evaluate expression in the page until it is truthy (through the DevTools protocol, which the page's strict
    Content-Security-Policy allows; Playwright's wait_for_function would need 'unsafe-eval')."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression}"
        page.wait_for_timeout(100)


def steps_shown(page: Any) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", page.inner_text("#job-steps"))
    return (int(match[1]), int(match[2])) if match else (0, 0)


def chart_points(page: Any) -> int:
    return int(page.get_attribute("#loss-chart", "data-points") or 0)


def test_dashboard_upload_train_watch_download(
    server: LiveServer, page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.15")
    page.goto(server.url + "/")
    assert page.url.endswith("/ui/")
    page.wait_for_selector("#notice:not([hidden])")
    assert "needs an API key" in page.inner_text("#notice")

    # The key: typed once, kept in this tab's sessionStorage, never in the page or a URL.
    page.fill("#api-key", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#notice", state="hidden")  # the jobs list loaded with the key
    assert page.evaluate("sessionStorage.getItem('lorapod.apiKey')") == KEY
    assert page.input_value("#api-key") == ""

    # Drag and drop two images and their captions into a new dataset.
    source = make_dataset(tmp_path / "pics", 2)
    files = [
        {
            "name": p.name,
            "b64": base64.b64encode(p.read_bytes()).decode(),
            "type": "text/plain" if p.suffix == ".txt" else "image/png",
        }
        for p in sorted(source.iterdir())
    ]
    page.goto(server.url + "/ui/#/datasets")
    page.fill("#dataset-name", "faces")
    page.dispatch_event("#drop", "drop", {"dataTransfer": page.evaluate_handle(DROP_FILES, files)})
    until(page, "document.querySelector('#upload-result')?.textContent.includes('2 images, 2 captions')")

    # The caption preview: each image with its caption.
    page.click("#datasets a:text('faces')")
    until(page, "document.querySelectorAll('#captions figure img').length === 2")
    captions = sorted(page.locator("#captions figcaption").all_inner_texts())
    assert captions == sorted(p.read_text().strip() for p in source.glob("*.txt"))
    page.screenshot(path=str(shots() / "dashboard-dataset.png"), full_page=True)

    # Start a training from the form; its page follows it live.
    page.goto(server.url + "/ui/#/jobs")
    page.wait_for_selector("#train-dataset option[value=faces]", state="attached")
    page.select_option("#train-dataset", "faces")
    page.fill("#train-trigger", "sks")
    page.fill("#train-steps", "40")
    page.fill("#train-base", "sd15")
    page.fill("#train-sample-every", "10")
    page.click("#train-start")
    page.wait_for_url(re.compile(r"#/job/train_[0-9a-f]{12}$"))
    job_id = page.url.rsplit("/", 1)[-1]

    # The bar and the loss chart move while it runs.
    until(
        page,
        "(() => { const m = /^(\\d+)\\/40$/.exec(document.querySelector('#job-steps')?.textContent);"
        " return m && +m[1] > 0 && +m[1] < 30 && +document.querySelector('#loss-chart')?.dataset.points >= 2; })()",
    )
    first_step, first_points = steps_shown(page)[0], chart_points(page)
    assert page.inner_text("#job-phase") in ("training", "saving", "sampling")
    until(
        page,
        f"(() => {{ const m = /^(\\d+)\\/40$/.exec(document.querySelector('#job-steps')?.textContent);"
        f" return m && +m[1] > {first_step}"
        f" && +document.querySelector('#loss-chart')?.dataset.points > {first_points}; }})()",
    )
    assert re.fullmatch(r"\d+\.\d+", page.inner_text("#job-loss"))
    assert page.locator("#loss-chart polyline").count() == 1
    page.screenshot(path=str(shots() / "dashboard-training.png"), full_page=True)

    until(page, "document.querySelector('#job-status')?.textContent === 'completed'")
    assert steps_shown(page) == (40, 40)
    until(page, "document.querySelectorAll('#samples img').length >= 1")
    assert page.locator("#btn-cancel").is_hidden()
    page.screenshot(path=str(shots() / "dashboard-completed.png"), full_page=True)

    # Download the LoRA: the same bytes as on the server.
    with page.expect_download() as info:
        page.click("#artifacts button[data-name='faces.safetensors']")
    saved = tmp_path / "faces.safetensors"
    info.value.save_as(saved)
    served = server.service.workspace.root / "output" / job_id / "faces" / "faces.safetensors"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == hashlib.sha256(served.read_bytes()).hexdigest()

    # The generate form offers the new LoRA.
    page.goto(server.url + "/ui/#/generate")
    page.wait_for_selector(f"#gen-lora option[value={job_id}]", state="attached")

    assert page.requested and not any(KEY in url for url in page.requested)  # type: ignore[attr-defined]
