"""lorapod's image generator: a long-lived process that keeps one diffusers pipeline warm and speaks JSON lines.

Runs in ai-toolkit's Python environment and needs only torch, diffusers, transformers, peft, safetensors,
pillow, huggingface_hub and the standard library (ai-toolkit's own `job: generate` is broken for SD 1.5, SDXL
and FLUX.1 at the reference version, ai-toolkit issue #416). Start it as `python <path>/generate_worker.py`
or `python -m gpu.generate_worker`.

The protocol (its ops, events and request fields) is declared in generate_protocol.py, beside this file.
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
import datetime  # noqa: E402
import gc  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:  # annotations only: at run time the protocol is `wire`, loaded below
    from gpu.generate_protocol import GenerateRequest
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
    wire = worker_io.load_sibling("generate_protocol")
else:
    from gpu import generate_protocol as wire
    from gpu import worker_io

ADAPTER = "lorapod"
# Keyed by the protocol's OUTPUT_FORMATS and PIPELINES ("auto" asks diffusers), which requests are checked against.
FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}
PIPELINE_CLASSES = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline"}
# A FLUX.1 pipeline in bf16 needs about 33 GB; below this much GPU memory its parts take turns on the GPU.
_FLUX_OFFLOAD_BELOW_BYTES = 40 * 1024**3


class Cancelled(Exception):
    """Raised from the step callback to abandon the current image at once."""


log = worker_io.make_log("[lorapod-generate]")
# Re-exported: a test drives the protocol stream under this module's name.
take_stdout = worker_io.take_stdout
if not TYPE_CHECKING:
    Protocol = worker_io.Protocol


atomic_write = worker_io.atomic_write


def encode_image(image: Any, output_format: str) -> bytes:
    """A PIL image as png, jpg or webp bytes."""
    pil_format, _ = FORMATS[output_format]
    if pil_format == "JPEG":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    options = {"quality": 95} if pil_format in ("JPEG", "WEBP") else {}
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


class Engine:
    """The warm pipeline: loads a base model once, swaps LoRAs, renders one image per seed."""

    def __init__(self, protocol: Protocol, cancel: threading.Event) -> None:
        import diffusers
        import torch

        self.torch = torch
        self.diffusers = diffusers
        self.protocol = protocol
        self.cancel = cancel
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.pipe: Any = None
        self.model_key: tuple[str, str] | None = None
        self.pipeline_class = ""
        self.call_params: frozenset[str] = frozenset()  # what this pipeline's __call__ accepts
        self.lora_key: tuple[str, float, int] | None = None  # path, mtime, size: a rewritten file is reloaded
        self.loads = 0

    # -- the base model ------------------------------------------------------------------------------

    def ensure_model(self, job: GenerateRequest) -> None:
        """Load job's base model unless it is the one already loaded."""
        key = (job.base_model, job.pipeline)
        if self.pipe is not None and self.model_key == key:
            return
        self.release()
        self.protocol.emit(wire.EVENT_LOADING, id=job.id, base_model=job.base_model)
        log(f"loading base model {job.base_model} (pipeline {job.pipeline}) on {self.device}")
        self.pipe, self.pipeline_class = self._load(job.base_model, job.pipeline)
        self.call_params = frozenset(inspect.signature(self.pipe.__call__).parameters)
        self.model_key = key
        self.loads += 1
        log(f"loaded {self.pipeline_class}; base-model loads so far: {self.loads}")

    def release(self) -> None:
        """Drop the pipeline and give its memory back."""
        self.pipe = None
        self.model_key = None
        self.lora_key = None
        gc.collect()
        if self.device == "cuda":
            self.torch.cuda.empty_cache()

    def _load(self, base_model: str, hint: str) -> tuple[Any, str]:
        """Load a diffusers pipeline from a Hub repo id or a local folder; returns it and its class name."""
        diffusers = self.diffusers
        # The Hub client reads HF_TOKEN, HF_HUB_CACHE and HF_HUB_OFFLINE from the environment by itself.
        hub: dict[str, Any] = {}
        if os.environ.get("HF_HUB_CACHE"):
            hub["cache_dir"] = os.environ["HF_HUB_CACHE"]
        if hint == "auto":
            config = diffusers.DiffusionPipeline.load_config(base_model, **hub)
            class_name = str(config.get("_class_name", ""))
            loader = diffusers.AutoPipelineForText2Image
        else:
            class_name = PIPELINE_CLASSES[hint]
            loader = getattr(diffusers, class_name)
        is_flux = "Flux" in class_name
        kwargs: dict[str, Any] = {**hub, **self._dtype_kwargs(is_flux)}
        local = os.path.isdir(base_model)
        if (
            class_name == "StableDiffusionPipeline"
            and local
            and not os.path.isdir(os.path.join(base_model, "safety_checker"))
        ):
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        pipe = loader.from_pretrained(base_model, **kwargs)
        if self.device == "cuda" and is_flux and self._gpu_bytes() < _FLUX_OFFLOAD_BELOW_BYTES:
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)  # progress goes out as events, not as bars in the log
        return pipe, type(pipe).__name__

    def _dtype_kwargs(self, is_flux: bool) -> dict[str, Any]:
        """bf16 for FLUX and fp16 otherwise on CUDA, float32 on the CPU, under the name this diffusers takes."""
        torch = self.torch
        gpu_dtype = torch.bfloat16 if is_flux else torch.float16
        dtype = gpu_dtype if self.device == "cuda" else torch.float32
        from diffusers.utils import deprecation_utils

        # Newer diffusers renamed torch_dtype to dtype and warn on the old name; older ones only know torch_dtype.
        name = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
        return {name: dtype}

    def _gpu_bytes(self) -> int:
        """Total memory of the visible GPU."""
        return int(self.torch.cuda.get_device_properties(0).total_memory)

    # -- the LoRA ------------------------------------------------------------------------------------

    def apply_lora(self, path: str | None, scale: float) -> None:
        """Load the requested LoRA (replacing another), or unload it when none is asked for; set its scale."""
        key: tuple[str, float, int] | None = None
        if path is not None:
            stat = os.stat(path)  # a missing file fails here, before anything is unloaded
            key = (path, stat.st_mtime, stat.st_size)
        if key != self.lora_key:
            if self.lora_key is not None:
                self.pipe.unload_lora_weights()
                self.lora_key = None
                log("unloaded the previous LoRA")
            if path is not None:
                try:
                    # Offline, diffusers needs the folder plus weight_name; a bare file path does not load.
                    self.pipe.load_lora_weights(
                        os.path.dirname(path), weight_name=os.path.basename(path), adapter_name=ADAPTER
                    )
                except Exception:
                    with contextlib.suppress(Exception):
                        self.pipe.unload_lora_weights()
                    raise
                self.lora_key = key
                log(f"loaded LoRA {os.path.basename(path)}")
        if self.lora_key is not None:
            self.pipe.set_adapters([ADAPTER], adapter_weights=[scale])

    # -- generating ----------------------------------------------------------------------------------

    def generate(self, job: GenerateRequest) -> tuple[str, list[str]]:
        """Render every image of job; returns the status and the image paths written."""
        self.ensure_model(job)
        self.apply_lora(job.lora_path, job.lora_scale)
        os.makedirs(job.output_dir, exist_ok=True)
        first_seed = job.seed if job.seed is not None else random.randrange(2**32)
        total = len(job.prompts) * job.num_images
        written: list[str] = []
        for index in range(total):
            if self.cancel.is_set():
                return wire.STATUS_CANCELLED, written
            prompt = job.prompts[index // job.num_images]
            seed = first_seed + index
            try:
                image = self._render(job, prompt, seed, index, total)
            except Cancelled:
                return wire.STATUS_CANCELLED, written
            path, sidecar = self._save(job, image, index, prompt, seed)
            written.append(path)
            self.protocol.emit(wire.EVENT_IMAGE, id=job.id, index=index, path=path, seed=seed, sidecar=sidecar)
        return wire.STATUS_COMPLETED, written

    def _render(self, job: GenerateRequest, prompt: str, seed: int, index: int, total: int) -> Any:
        """One image with its own generator, reporting every denoising step and stopping on cancel."""
        # A CPU generator gives the same noise for a seed whatever the device.
        generator = self.torch.Generator(device="cpu").manual_seed(seed)

        def on_step(_pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            self.protocol.emit(
                wire.EVENT_PROGRESS,
                id=job.id,
                image=index,
                images=total,
                step=min(step + 1, job.steps),
                steps=job.steps,
            )
            if self.cancel.is_set():
                raise Cancelled
            return tensors

        kwargs: dict[str, Any] = {
            "prompt": prompt,
            "width": job.width,
            "height": job.height,
            "num_inference_steps": job.steps,
            "guidance_scale": job.guidance_scale,
            "generator": generator,
            "num_images_per_prompt": 1,
            "callback_on_step_end": on_step,
        }
        if job.negative_prompt and "negative_prompt" in self.call_params:
            kwargs["negative_prompt"] = job.negative_prompt
        elif job.negative_prompt and index == 0:
            log(f"{self.pipeline_class} takes no negative prompt here; it is ignored")
        return self.pipe(**kwargs).images[0]

    def _save(self, job: GenerateRequest, image: Any, index: int, prompt: str, seed: int) -> tuple[str, str]:
        """Write the image and its JSON sidecar atomically; returns both paths."""
        _, ext = FORMATS[job.output_format]
        path = os.path.join(job.output_dir, f"{index}{ext}")
        sidecar_path = os.path.join(job.output_dir, f"{index}.json")
        atomic_write(path, encode_image(image, job.output_format))
        record = {
            "generator": wire.VERSION,
            "job_id": job.id,
            "index": index,
            "image": os.path.basename(path),
            "prompt": prompt,
            "negative_prompt": job.negative_prompt,
            "base_model": job.base_model,
            "pipeline": self.pipeline_class,
            "lora": os.path.basename(job.lora_path) if job.lora_path else None,
            "lora_scale": job.lora_scale if job.lora_path else None,
            "width": image.width,
            "height": image.height,
            "steps": job.steps,
            "guidance_scale": job.guidance_scale,
            "seed": seed,
            "format": job.output_format,
            # timezone.utc, not datetime.UTC: ai-toolkit's environment may be Python 3.10.
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        }
        atomic_write(sidecar_path, (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        return path, sidecar_path

    def recover(self) -> None:
        """After a failed request: drop a half-applied LoRA and free cached memory, keep the base model."""
        if self.pipe is not None and self.lora_key is not None:
            try:
                self.pipe.unload_lora_weights()
            except Exception:  # the pipeline is in an unknown state: load it afresh next time
                self.release()
        self.lora_key = None
        gc.collect()
        if self.device == "cuda":
            self.torch.cuda.empty_cache()


def handle(engine: Engine, protocol: Protocol, message: dict[str, Any]) -> None:
    """Run one generate request; any error is reported as an event and the worker carries on."""
    request_id = message.get("id")
    try:
        job = wire.GenerateRequest.parse(message)
        if job.log_path:
            worker_io.redirect_output(job.log_path)
        log(f"request {job.id}: {len(job.prompts)} prompt(s) x {job.num_images} image(s), {job.steps} steps")
        status, images = engine.generate(job)
        log(f"request {job.id}: {status}, {len(images)} image(s)")
        protocol.emit(wire.EVENT_DONE, id=request_id, status=status, loads=engine.loads, images=images)
    except Exception as exc:
        message_text = worker_io.error_text(exc)
        engine.recover()
        base_model = engine.model_key[0] if engine.model_key else None
        protocol.emit(wire.EVENT_ERROR, id=request_id, message=message_text, loads=engine.loads, base_model=base_model)


def main() -> int:
    """Serve requests until shutdown or the end of stdin."""
    return int(worker_io.serve(wire, wire.OP_GENERATE, log, Engine, handle))


if __name__ == "__main__":
    sys.exit(main())
