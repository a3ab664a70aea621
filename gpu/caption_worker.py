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

import gc  # noqa: E402
import threading  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:  # annotations only: at run time the protocol is `wire`, loaded below
    from gpu.caption_protocol import CaptionRequest
    from gpu.worker_io import Protocol

if _AS_SCRIPT:
    # lorapod is not installed here, but its stdlib-only modules sit beside this file. They are loaded by their
    # paths: with this folder back on sys.path, a sibling module could shadow a library they import.
    import importlib.util

    _spec = importlib.util.spec_from_file_location("worker_io", os.path.join(_HERE, "worker_io.py"))
    assert _spec is not None and _spec.loader is not None
    worker_io = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = worker_io
    _spec.loader.exec_module(worker_io)
    wire = worker_io.load_sibling("caption_protocol")
else:
    from gpu import caption_protocol as wire
    from gpu import worker_io


log = worker_io.make_log("[lorapod-caption]")


def atomic_write_text(path: str, text: str) -> None:
    """Write a caption file atomically: it is either old or new, never half."""
    worker_io.atomic_write(path, (text + "\n").encode("utf-8"), prefix=wire.TEMP_PREFIX)


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
            worker_io.redirect_output(job.log_path)
        log(f"request {job.id}: {len(job.images)} image(s) with {job.model}")
        result = engine.caption(job)
        log(
            f"request {job.id}: {result['status']}, {len(result['written'])} caption(s) written, "
            f"{result['skipped']} skipped, {len(result['unreadable'])} unreadable"
        )
        protocol.emit(wire.EVENT_DONE, id=request_id, loads=engine.loads, model=engine.model_key, **result)
    except Exception as exc:
        text = worker_io.error_text(exc)
        engine.recover()
        protocol.emit(wire.EVENT_ERROR, id=request_id, message=text, loads=engine.loads, model=engine.model_key)


def main() -> int:
    """Serve requests until shutdown or the end of stdin."""
    return int(worker_io.serve(wire, wire.OP_CAPTION, log, Engine, handle))


if __name__ == "__main__":
    sys.exit(main())
