"""lorapod's image captioner: a long-lived process that keeps one captioning model warm and speaks JSON lines.

Runs in ai-toolkit's Python environment and needs only torch, transformers, pillow, huggingface_hub and the
standard library. Start it as `python <path>/caption_worker.py` or `python -m gpu.caption_worker`. It loads
models transformers knows by their config's architecture (BLIP, GIT, VisionEncoderDecoder, ...) and never
runs code from a model repository (no trust_remote_code).

The protocol (its ops, events and request fields) is declared in caption_protocol.py, beside this file.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path; its sibling modules must not shadow any library.
_HERE = os.path.dirname(os.path.abspath(__file__))
_AS_SCRIPT = bool(sys.path) and os.path.abspath(sys.path[0] or os.curdir) == _HERE
if _AS_SCRIPT:
    sys.path.pop(0)

import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import queue  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from typing import IO, TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:  # annotations only: at run time the protocol is `wire`, loaded below
    from gpu.caption_protocol import CaptionRequest

if _AS_SCRIPT:
    # lorapod is not installed here, but the protocol sits beside this file; it is loaded by its path.
    import importlib.util

    _spec = importlib.util.spec_from_file_location("caption_protocol", os.path.join(_HERE, "caption_protocol.py"))
    assert _spec is not None and _spec.loader is not None
    wire = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = wire  # dataclasses looks its module up there
    _spec.loader.exec_module(wire)
else:
    from gpu import caption_protocol as wire

_MAX_MESSAGE = 2000


def log(message: str) -> None:
    """One line in the worker's log (stderr, which the client points at the job's log file)."""
    print(f"[lorapod-caption] {message}", file=sys.stderr, flush=True)


def take_stdout() -> int:
    """Keep the real stdout for the protocol; from now on fd 1 and sys.stdout write to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_fd


def redirect_output(path: str) -> None:
    """Send fd 1 and fd 2 (library prints, warnings, tracebacks) to the end of the file at path."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 2)
        os.dup2(fd, 1)
    finally:
        os.close(fd)


class Protocol:
    """The event stream: one JSON object per line, safe to write from any thread."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event and flush it."""
        line = json.dumps({wire.EVENT: event, **fields}, ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


class Inbox:
    """Reads stdin on a thread: requests go to a queue, a cancel sets a flag the running request checks."""

    def __init__(self, protocol: Protocol) -> None:
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        self.cancel = threading.Event()
        self._protocol = protocol

    def start(self, stream: IO[str]) -> None:
        """Read stream until its end on a daemon thread."""
        threading.Thread(target=self._read, args=(stream,), name="inbox", daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for raw in stream:
            if not raw.strip():
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                self._protocol.emit(wire.EVENT_ERROR, id=None, message="a request line is not JSON")
                continue
            op = message.get(wire.OP) if isinstance(message, dict) else None
            if op == wire.OP_CANCEL:
                self.cancel.set()
            elif op == wire.OP_CAPTION:
                self.cancel.clear()  # a cancel that arrived after the previous request ended is not for this one
                self.requests.put(message)
            elif op == wire.OP_SHUTDOWN:
                self.cancel.set()
                self.requests.put(message)
            else:
                self._protocol.emit(
                    wire.EVENT_ERROR,
                    id=message.get("id") if isinstance(message, dict) else None,
                    message=f"unknown op {op!r}",
                )
        # The client is gone (or closed our stdin): stop what runs and exit.
        self.cancel.set()
        self.requests.put({wire.OP: wire.OP_SHUTDOWN})


def atomic_write_text(path: str, text: str) -> None:
    """Write through a hidden temporary sibling renamed into place: the file is either old or new, never half."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{wire.TEMP_PREFIX}{name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write((text + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Engine:
    """The warm model: loads a captioning model once and captions one image at a time."""

    def __init__(self, protocol: Protocol, cancel: threading.Event) -> None:
        import torch
        import transformers

        self.torch = torch
        self.transformers = transformers
        self.protocol = protocol
        self.cancel = cancel
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        self.model: Any = None
        self.processor: Any = None
        self.tokenizer: Any = None
        self.model_key: str | None = None
        self.loads = 0

    def ensure_model(self, job: CaptionRequest) -> None:
        """Load job's model unless it is the one already loaded."""
        if self.model is not None and self.model_key == job.model:
            return
        self.release()
        self.protocol.emit(wire.EVENT_LOADING, id=job.id, model=job.model)
        log(f"loading captioning model {job.model} on {self.device}")
        try:
            self.model, self.processor, self.tokenizer = self._load(job.model)
        except Exception as exc:
            self.release()
            raise RuntimeError(f"could not load the captioning model '{job.model}': {exc}") from exc
        self.model_key = job.model
        self.loads += 1
        log(f"loaded {type(self.model).__name__}; model loads so far: {self.loads}")

    def release(self) -> None:
        """Drop the model and give its memory back."""
        self.model = self.processor = self.tokenizer = None
        self.model_key = None
        gc.collect()
        if self.device == "cuda":
            self.torch.cuda.empty_cache()

    def _load(self, name: str) -> tuple[Any, Any, Any]:
        """The model class its config names, with its processor (or image processor and tokenizer)."""
        transformers = self.transformers
        # The Hub client reads HF_TOKEN, HF_HUB_CACHE and HF_HUB_OFFLINE from the environment by itself.
        hub: dict[str, Any] = {}
        if os.environ.get("HF_HUB_CACHE"):
            hub["cache_dir"] = os.environ["HF_HUB_CACHE"]
        config = transformers.AutoConfig.from_pretrained(name, **hub)
        architectures = list(getattr(config, "architectures", None) or [])
        model_class = next((getattr(transformers, a) for a in architectures if hasattr(transformers, a)), None)
        if model_class is None or not hasattr(model_class, "generate"):
            raise ValueError(
                f"'{name}' is not an image-captioning model this transformers can load "
                f"(architectures {architectures or 'unknown'}; models that need remote code are not run)"
            )
        model = model_class.from_pretrained(name, dtype=self.dtype, **hub)
        model.to(self.device)
        model.eval()
        try:
            processor = transformers.AutoProcessor.from_pretrained(name, **hub)
            tokenizer = getattr(processor, "tokenizer", None)
        except (OSError, ValueError, KeyError):
            # VisionEncoderDecoder checkpoints often ship an image processor and a tokenizer but no processor.
            processor = transformers.AutoImageProcessor.from_pretrained(name, **hub)
            tokenizer = transformers.AutoTokenizer.from_pretrained(name, **hub)
        if tokenizer is None and not hasattr(processor, "batch_decode"):
            raise ValueError(f"'{name}' has no tokenizer to turn the model's output into text")
        return model, processor, tokenizer

    @staticmethod
    def read_image(path: str) -> Any:
        """The image as RGB, or None when it cannot be decoded (the job goes on without it)."""
        from PIL import Image

        try:
            with Image.open(path) as opened:
                return opened.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            log(f"cannot read {path}: {type(exc).__name__}: {exc}")
            return None

    def describe(self, image: Any, max_length: int) -> str:
        """The model's caption of one RGB image."""
        inputs = self.processor(images=image, return_tensors="pt")
        tensors = {key: value.to(self.device) for key, value in inputs.items() if hasattr(value, "to")}
        if "pixel_values" in tensors:
            tensors["pixel_values"] = tensors["pixel_values"].to(self.dtype)
        with self.torch.inference_mode():
            output = self.model.generate(**tensors, max_new_tokens=max_length)
        decoder = self.processor if hasattr(self.processor, "batch_decode") else self.tokenizer
        return str(decoder.batch_decode(output, skip_special_tokens=True)[0])

    def caption(self, job: CaptionRequest) -> dict[str, Any]:
        """Caption every image of job; the done event's fields: status, written, skipped, unreadable."""
        result: dict[str, Any] = {"status": wire.STATUS_COMPLETED, "written": [], "skipped": 0, "unreadable": []}
        total = len(job.images)
        for index, path in enumerate(job.images):
            if self.cancel.is_set():
                return {**result, "status": wire.STATUS_CANCELLED}
            self.protocol.emit(wire.EVENT_PROGRESS, id=job.id, index=index, total=total, image=path)
            target = wire.caption_path(path)
            # Checked again here: a caption written (or an image deleted) since the job was queued wins.
            if not os.path.isfile(path) or (not job.overwrite and os.path.exists(target)):
                result["skipped"] += 1
                continue
            image = self.read_image(path)
            if image is None:
                result["unreadable"].append(path)
                continue
            self.ensure_model(job)
            text = wire.compose_caption(self.describe(image, job.max_length), job)
            if self.cancel.is_set():  # cancelled while the model was busy: this caption is not written
                return {**result, "status": wire.STATUS_CANCELLED}
            atomic_write_text(target, text)
            result["written"].append(target)
            self.protocol.emit(wire.EVENT_CAPTION, id=job.id, index=index, image=path, path=target, caption=text)
        self.protocol.emit(wire.EVENT_PROGRESS, id=job.id, index=total, total=total, image=None)
        return result

    def recover(self) -> None:
        """After a failed request: free cached memory, keep the model."""
        gc.collect()
        if self.device == "cuda":
            self.torch.cuda.empty_cache()


def handle(engine: Engine, protocol: Protocol, message: dict[str, Any]) -> None:
    """Run one caption request; any error is reported as an event and the worker carries on."""
    request_id = message.get("id")
    try:
        job = wire.CaptionRequest.parse(message)
        if job.log_path:
            redirect_output(job.log_path)
        log(f"request {job.id}: {len(job.images)} image(s) with {job.model}")
        result = engine.caption(job)
        log(
            f"request {job.id}: {result['status']}, {len(result['written'])} caption(s) written, "
            f"{result['skipped']} skipped, {len(result['unreadable'])} unreadable"
        )
        protocol.emit(wire.EVENT_DONE, id=request_id, loads=engine.loads, model=engine.model_key, **result)
    except Exception as exc:
        traceback.print_exc()
        engine.recover()
        text = f"{type(exc).__name__}: {exc}"
        if len(text) > _MAX_MESSAGE:
            text = text[: _MAX_MESSAGE - 1] + "…"
        protocol.emit(wire.EVENT_ERROR, id=request_id, message=text, loads=engine.loads, model=engine.model_key)


def main() -> int:
    """Serve requests until shutdown or the end of stdin."""
    protocol = Protocol(take_stdout())  # first, before any library can print
    inbox = Inbox(protocol)
    inbox.start(sys.stdin)
    engine = Engine(protocol, inbox.cancel)
    log(f"worker {os.getpid()} ready on {engine.device}")
    protocol.emit(wire.EVENT_READY, pid=os.getpid(), device=engine.device, version=wire.VERSION)
    while True:
        message = inbox.requests.get()
        if message.get(wire.OP) == wire.OP_SHUTDOWN:
            log("shutting down")
            return 0
        handle(engine, protocol, message)


if __name__ == "__main__":
    sys.exit(main())
