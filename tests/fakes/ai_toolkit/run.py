"""A stand-in for ostris/ai-toolkit's run.py: the same command line, output and files, no model.

It runs on stdlib and PyYAML only, in milliseconds, so tests can drive real subprocesses.
Behaviour knobs come from FAKE_AITK_* environment variables (see README.md next to this file).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import random
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any, TextIO

import yaml

TOOLKIT_ROOT = Path(__file__).resolve().parent
CONFIG_EXTENSIONS = (".json", ".jsonc", ".yaml", ".yml")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
BANNER = "========================================"
VERSION = "0.12.26"
REPO = "https://github.com/ostris/ai-toolkit"
BAR_WIDTH = 10  # tqdm's width when stderr is not a terminal and COLUMNS is unset

# An 8x8 JPEG and WebP made once with Pillow, so this script needs no image library.
TINY_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a181616183123251d283a"
    "333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c656763ffdb0043011112121815182f1a1a2f"
    "63423842636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363"
    "6363ffc00011080008000803012200021101031101ffc4001f000001050101010101010000000000000000010203040506070809"
    "0a0bffc400b5100002010303020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c115"
    "52d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768696a"
    "737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9ca"
    "d2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffc4001f01000301010101010101010100000000000001"
    "02030405060708090a0bffc400b51100020102040403040705040400010277000102031104052131061241510761711322328108"
    "144291a1b1c109233352f0156272d10a162434e125f11718191a262728292a35363738393a434445464748494a53545556575859"
    "5a636465666768696a737475767778797a82838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9"
    "bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9faffda000c03010002110311003f00af"
    "451457b059ffd9"
)
TINY_WEBP = bytes.fromhex(
    "52494646300000005745425056503820240000007001009d012a0800080002c04c25a0027401400000fede127ff0417e20fd41a9fcf80000"
)


def env_float(name: str, default: float) -> float:
    """A float knob from the environment."""
    return float(os.environ.get(name) or default)


def env_int(name: str, default: int | None) -> int | None:
    """An integer knob from the environment."""
    value = os.environ.get(name)
    return int(value) if value else default


def say(text: str = "") -> None:
    """print() to stdout, flushed like ai-toolkit's print_acc under PYTHONUNBUFFERED."""
    print(text, flush=True)


# ----------------------------------------------------------------------------- files


def tiny_png() -> bytes:
    """A valid 1x1 grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x80")  # filter byte 0, one grey pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def image_bytes(fmt: str) -> bytes:
    """Bytes of a tiny image in the sample format (an mp4 gets placeholder bytes)."""
    return {"jpg": TINY_JPEG, "jpeg": TINY_JPEG, "png": tiny_png(), "webp": TINY_WEBP}.get(fmt, b"fake video\n")


def safetensors_bytes(tensors: dict[str, tuple[list[int], list[float]]], metadata: dict[str, str]) -> bytes:
    """A safetensors file: 8-byte little-endian header length, JSON header, then the F32 data."""
    header: dict[str, Any] = {"__metadata__": metadata}
    data = b""
    for key, (shape, values) in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header with spaces to 8-byte alignment
    return struct.pack("<Q", len(text)) + text + data


def write_lora(path: Path, name: str, step: int, rank: int) -> None:
    """Write a small kohya-style LoRA whose weights and metadata depend on the step."""
    rng = random.Random(step)
    prefix = "lora_unet_down_blocks_0_attentions_0_proj_in"
    width = 8
    tensors = {
        f"{prefix}.alpha": ([], [float(rank)]),
        f"{prefix}.lora_down.weight": ([rank, width], [rng.uniform(-0.1, 0.1) for _ in range(rank * width)]),
        f"{prefix}.lora_up.weight": ([width, rank], [rng.uniform(-0.01, 0.01) for _ in range(rank * width)]),
    }
    metadata = {
        "training_info": json.dumps({"step": step, "epoch": 1}),
        "ss_output_name": name,
        "ss_base_model_version": "sd_1.5",
        "software": json.dumps({"name": "ai-toolkit", "repo": REPO, "version": VERSION}),
        "format": "pt",
    }
    # Written straight to the final path, as ai-toolkit does.
    path.write_bytes(safetensors_bytes(tensors, metadata))


# ----------------------------------------------------------------------------- the bar


def format_interval(seconds: float) -> str:
    """tqdm's [H:]MM:SS."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Bar:
    """tqdm's default bar format on stderr, redrawn with \\r and no newline until closed."""

    def __init__(self, desc: str, total: int, initial: int, ascii_bar: bool, stream: TextIO) -> None:
        self.desc, self.total, self.n, self.initial = desc, total, initial, initial
        self.charset = " 123456789#" if ascii_bar else " " + "".join(chr(0x258F - i) for i in range(8))
        self.stream = stream
        self.postfix = ""
        self.start = time.monotonic()
        self.last_len = 0
        self.closed = False
        self.draw()

    def bar(self, fraction: float) -> str:
        """The bar glyphs for a fraction done."""
        symbols = len(self.charset) - 1
        full, part = divmod(int(fraction * BAR_WIDTH * symbols), symbols)
        text = self.charset[-1] * full
        if full < BAR_WIDTH:
            text += self.charset[part] + self.charset[0] * (BAR_WIDTH - full - 1)
        return text

    def line(self) -> str:
        """One redraw in tqdm's format."""
        elapsed = time.monotonic() - self.start
        fraction = self.n / self.total if self.total else 0.0
        rate = (self.n - self.initial) / elapsed if elapsed > 0 and self.n > self.initial else None
        if rate is None:
            rate_text, remaining = "?it/s", "?"
        else:
            rate_text = f"{1 / rate:5.2f}s/it" if rate < 1 else f"{rate:5.2f}it/s"
            remaining = format_interval((self.total - self.n) / rate)
        postfix = f", {self.postfix}" if self.postfix else ""
        return (
            f"{self.desc}: {fraction * 100:3.0f}%|{self.bar(fraction)}| {self.n}/{self.total}"
            f" [{format_interval(elapsed)}<{remaining}, {rate_text}{postfix}]"
        )

    def draw(self) -> None:
        """Redraw in place, padding over a longer previous line, as tqdm does."""
        text = self.line()
        self.stream.write("\r" + text + " " * max(self.last_len - len(text), 0))
        self.stream.flush()
        self.last_len = len(text)

    def set_postfix(self, text: str) -> None:
        """Show a new postfix at the current count."""
        self.postfix = text
        self.draw()

    def update_to(self, n: int) -> None:
        """Move the count and redraw."""
        self.n = n
        self.draw()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if not self.closed:
            self.closed = True
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


CURRENT_BAR: Bar | None = None


# ----------------------------------------------------------------------------- config


def find_config(arg: str) -> Path:
    """Resolve a config name the way ai-toolkit does: config/<arg>, with extensions, as given, then cwd."""
    in_folder = TOOLKIT_ROOT / "config" / arg
    candidates = [in_folder] + [Path(f"{in_folder}{ext}") for ext in CONFIG_EXTENSIONS]
    candidates += [Path(arg), Path.cwd() / arg]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise ValueError(f"Could not find config file {arg}")


def substitute_env(text: str) -> str:
    """ai-toolkit's ${VAR} substitution; an unset variable is an error."""

    def replace(match: re.Match[str]) -> str:
        value = os.environ.get(match[1])
        if value is None:
            raise ValueError(f"Environment variable {match[1]} not set. Please ensure it's defined before proceeding.")
        return value

    return re.sub(r"\$\{([^}]+)\}", replace, text)


def load_config(arg: str, name: str | None) -> dict[str, Any]:
    """Read, substitute and check a config file."""
    path = find_config(arg)
    text = substitute_env(path.read_text(encoding="utf-8"))
    if path.suffix in (".json", ".jsonc"):
        config = json.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        config = yaml.safe_load(text)
    else:
        raise ValueError(f"Config file {arg} must be a json or yaml file")
    if "job" not in config:
        raise ValueError("config file must have a job key")
    if "config" not in config:
        raise ValueError("config file must have a config section")
    if "name" not in config["config"] and name is None:
        raise ValueError("config file must have a config.name key")
    name = name or config["config"]["name"]
    return json.loads(json.dumps(config).replace("[name]", name))


# ----------------------------------------------------------------------------- the job


def count_images(folder: Path) -> int:
    """Images under folder, recursively, skipping hidden files and folders."""
    count = 0
    for _root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        count += sum(1 for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return count


def check_datasets(datasets: list[dict[str, Any]]) -> None:
    """The dataset lines ai-toolkit prints, and its two dataset errors."""
    for dataset in datasets:
        folder = dataset["folder_path"]
        say(f"Dataset: {folder}")
        say("  -  Preprocessing image dimensions")
        if not os.path.exists(folder):
            # ai-toolkit opens a missing folder path as a file list, hence this error.
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), folder)
        found = count_images(Path(folder))
        say(f"  -  Found {found} images")
        assert found > 0, f"no images found in {folder}"
        say(f"Bucket sizes for {folder}:")
        say(f"512x512: {found} files")
        say("1 buckets made")


def record_env(save_root: Path) -> None:
    """Write what the trainer saw to env.json: never the token itself, only whether it was set."""
    seen = {
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER"),
        "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED"),
        "HF_TOKEN_SET": bool(os.environ.get("HF_TOKEN")),
        "AITK_JOB_ID": os.environ.get("AITK_JOB_ID"),
        "HF_HOME": os.environ.get("HF_HOME"),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
    }
    (save_root / "env.json").write_text(json.dumps(seen, indent=2))


# ----------------------------------------------------------------------------- the UI's job-control table


class JobControlDB:
    """DiffusionTrainer's use of the UI's SQLite `Job` row: UPDATE only, values through str(), flags tested == 1."""

    def __init__(self, path: str, job_id: str) -> None:
        self.path, self.job_id = path, job_id
        say(f"Using SQLite database at {path}")
        say(f'Job ID: "{job_id}"')
        self.read()  # a file without the table: sqlite3.OperationalError "no such table: Job", exit 1

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def write(self, **fields: Any) -> None:
        """UPDATE the row (the real trainer writes every value through str())."""
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with contextlib.closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"UPDATE Job SET {assignments} WHERE id = ?", [str(v) for v in fields.values()] + [self.job_id])
            db.execute("COMMIT")

    def read(self) -> dict[str, Any]:
        """The row's flags, or zeros when there is no row for this id."""
        with contextlib.closing(self._connect()) as db:
            row = db.execute(
                "SELECT stop, save_now, sample_now, return_to_queue, status FROM Job WHERE id = ?", [self.job_id]
            ).fetchone()
        if row is None:
            return {"stop": 0, "save_now": 0, "sample_now": 0, "return_to_queue": 0, "status": None}
        return dict(zip(("stop", "save_now", "sample_now", "return_to_queue", "status"), row, strict=True))

    def flag(self, name: str) -> bool:
        """One flag, compared the way the trainer compares it."""
        return bool(self.read()[name] == 1)


class JobStopped(Exception):
    """The trainer's own Exception("Job stopped") / ("Job returning to queue")."""


def open_control(process: dict[str, Any]) -> JobControlDB | None:
    """DB mode: type diffusion_trainer, sqlite_db_path exists and AITK_JOB_ID is set."""
    path = process.get("sqlite_db_path", "./aitk_db.db")
    job_id = (os.environ.get("AITK_JOB_ID") or "").strip()
    if process.get("type") != "diffusion_trainer" or not job_id or not os.path.exists(path):
        return None
    return JobControlDB(path, job_id)


def check_safetensors(path: Path) -> int:
    """The step in a checkpoint's metadata; the safetensors library's error for a truncated file."""
    data = path.read_bytes()
    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + length])
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError):
        raise RuntimeError("Error while deserializing header: invalid JSON in header") from None
    if len(data) < 8 + length or len(data) - 8 - length != end:
        raise RuntimeError("Error while deserializing header: incomplete metadata, file not fully covered")
    info = json.loads(header.get("__metadata__", {}).get("training_info", "{}"))
    return int(info.get("step", 0))


def latest_save(save_root: Path, name: str) -> Path | None:
    """get_latest_save_path: the newest file by ctime among <name>*.safetensors, <name>*.pt and <name>*."""
    if not save_root.is_dir():
        return None
    found = [p for p in save_root.iterdir() if p.name.startswith(name) and p.is_file()]
    # ctime first, as the trainer; the name breaks ties that a coarse clock leaves between quick saves
    return max(found, key=lambda p: (p.stat().st_ctime_ns, p.name), default=None)


class Job:
    """One sd_trainer process: the training loop, its saves and its samples."""

    def __init__(self, config: dict[str, Any], ascii_bar: bool) -> None:
        self.config = config
        self.name: str = config["config"]["name"]
        self.process: dict[str, Any] = config["config"]["process"][0]
        self.save_root = Path(self.process.get("training_folder", "output")) / self.name
        self.train = self.process.get("train") or {}
        self.save = self.process.get("save") or {}
        self.sample = self.process.get("sample") or {}
        self.ascii_bar = ascii_bar
        self.rank = int((self.process.get("network") or {}).get("linear", 4))
        self.rng = random.Random(0)
        self.control: JobControlDB | None = None
        self.last_save_step = 0
        self.finished_steps = 0

    def phase(self, info: str, status: str = "running") -> None:
        """Write status/info, then honour a pending stop (checked around every phase, as the trainer does)."""
        if self.control is None:
            return
        self.control.write(status=status, info=info)
        self.maybe_stop()

    def maybe_stop(self, flags: dict[str, Any] | None = None) -> None:
        """stop=1 or return_to_queue=1 (in flags, else read now): write the end state, step back to the last save,
        raise."""
        if self.control is None:
            return
        flags = flags or self.control.read()
        if flags["stop"] == 1:
            self.control.write(status="stopped", info="Job stopped", step=self.last_save_step)
            raise JobStopped("Job stopped")
        if flags["return_to_queue"] == 1:
            self.control.write(status="queued", info="Job queued", step=self.last_save_step)
            raise JobStopped("Job returning to queue")

    def end_of_step(self, step: int) -> None:
        """The trainer's step-end hook: write the step, then stop (wins), save_now, sample_now."""
        if self.control is None:
            return
        self.control.write(step=step + 1)
        # One read decides: flags set together are seen together, and stop wins over save_now as observed (the
        # trainer's separate reads leave a window of microseconds in which it could see save_now alone).
        flags = self.control.read()
        self.maybe_stop(flags)
        if flags["save_now"] == 1:
            self.control.write(info="Saving model")
            say(f"\nSaving at step {step}")
            self.write_checkpoint(step)
            self.control.write(save_now=0, info="Training")
        if self.control.flag("sample_now"):
            neg = self.sample.get("neg", False)
            if not isinstance(neg, str):
                raise ValueError(
                    "text input must be of type `str` (single example), `list[str]` (batch or single "
                    "pretokenized example) or `list[list[str]]` (batch of pretokenized examples)."
                )
            prompts = self.prompts()
            for done in range(len(prompts) + 1):
                self.control.write(info=f"Generating images - {done}/{len(prompts)}")
            self.write_samples(step)
            self.control.write(sample_now=0, info="Training")

    def resume_step(self) -> int:
        """Auto-resume: load the newest save by ctime (a truncated one crashes the run, as in the real trainer)."""
        latest = latest_save(self.save_root, self.name)
        if latest is None:
            return 0
        say(f"#### IMPORTANT RESUMING FROM {latest} ####")
        say(f"Loading from {latest}")
        if latest.suffix != ".safetensors":
            raise RuntimeError(
                "Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` "
                "argument in `torch.load` from `False` to `True`. Unsupported operand 42"
            )
        step = check_safetensors(latest)
        say("Missing keys: []")
        say(f"Found step {step} in metadata, starting from there")
        if (self.save_root / "optimizer.pt").exists():
            say(f"Loading optimizer state from {self.save_root / 'optimizer.pt'}")
        self.last_save_step = step
        return step

    def prompts(self) -> list[str]:
        """Sample prompts from sample.prompts or sample.samples[].prompt."""
        if self.sample.get("prompts"):
            return [str(p) for p in self.sample["prompts"]]
        return [str(s["prompt"]) for s in self.sample.get("samples") or [] if "prompt" in s]

    def run(self) -> None:
        """Everything ai-toolkit does for one training, minus the model."""
        global CURRENT_BAR
        say(json.dumps(self.config, indent=4))
        say()
        say("#############################################")
        say(f"# Running job: {self.name}")
        say("#############################################")
        say()
        say()
        say(f"Running  {len(self.config['config']['process'])} process")
        self.control = open_control(self.process)
        self.phase("Starting")
        self.phase("Loading model")
        self.save_root.mkdir(parents=True, exist_ok=True)
        (self.save_root / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        record_env(self.save_root)
        if os.environ.get("FAKE_AITK_SPAWN_CHILD") == "1":
            # Like a dataloader worker: a child in our process group that outlives us if nobody kills the group.
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdin=subprocess.DEVNULL)
        say(f"create LoRA network. base dim (rank): {self.rank}, alpha: {self.rank}")
        self.phase("Loading dataset")
        check_datasets(self.process.get("datasets") or [])
        start = self.resume_step()
        if self.control is not None:
            self.control.write(step=start)
        self.phase("Training")

        steps = int(self.train.get("steps", 10))
        lr = float(self.train.get("lr", 1e-4))
        sampling = not self.train.get("disable_sampling", False)
        if start > 1:
            pass  # baseline samples are skipped on a resume
        elif not sampling or self.train.get("skip_first_sample", False):
            say("Skipping first sample due to config setting")
        else:
            say("Generating baseline samples before training")
            self.write_samples(0)

        step_seconds = env_float("FAKE_AITK_STEP_SECONDS", 0.01)
        fail_at = env_int("FAKE_AITK_FAIL_AT_STEP", None)
        redraws = env_int("FAKE_AITK_REDRAWS_PER_STEP", 0) or 0
        save_every = int(self.save.get("save_every", 250) or 0)
        sample_every = int(self.sample.get("sample_every", 250) or 0)
        bar = CURRENT_BAR = Bar(self.name, steps, start, self.ascii_bar, sys.stderr)
        loss_log = self.open_loss_log()
        enospc_at = env_int("FAKE_AITK_ENOSPC_AT_STEP", None)
        for step in range(start, steps):
            if fail_at is not None and step == fail_at:
                raise RuntimeError(f"simulated failure at step {step}")
            time.sleep(step_seconds)
            loss = 0.2 + 0.8 * math.exp(-step / 50) + self.rng.uniform(-0.02, 0.02)
            bar.set_postfix(f"lr: {lr:.1e} loss: {loss:.3e}")
            if loss_log is not None:
                # The UI logger keeps full precision; the bar shows 4 digits, so a test can tell the sources apart.
                loss_log.execute("INSERT OR REPLACE INTO steps VALUES (?, ?)", (step + 1, time.time()))
                loss_log.executemany(
                    "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, NULL)",
                    [(step + 1, "loss/loss", loss + 1e-7), (step + 1, "learning_rate", lr)],
                )
                loss_log.commit()
            for _ in range(redraws):
                bar.draw()
            if step != 0 and save_every and step % save_every == 0:
                say(f"\nSaving at step {step}")
                if self.control is not None:
                    self.control.write(info="Saving model")
                self.write_checkpoint(step, enospc=step == enospc_at)
                if self.control is not None:
                    self.control.write(info="Training")
            if step != 0 and sampling and sample_every and step % sample_every == 0:
                self.write_samples(step)
            bar.update_to(step + 1)
            self.end_of_step(step)
        bar.close()
        self.write_checkpoint(None, step_for_metadata=steps)
        if sampling:
            self.write_samples(steps)
        if self.control is not None:
            self.control.write(status="completed", info="Training completed")
        say()

    def open_loss_log(self) -> sqlite3.Connection | None:
        """ai-toolkit's loss_log.db (logging.use_ui_logger), with the real tables, or None when not enabled."""
        if not (self.process.get("logging") or {}).get("use_ui_logger"):
            return None
        connection = sqlite3.connect(self.save_root / "loss_log.db")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS steps (step INTEGER PRIMARY KEY, wall_time REAL)")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS metric_keys"
            " (key TEXT PRIMARY KEY, first_seen_step INTEGER, last_seen_step INTEGER)"
        )
        connection.execute(
            "CREATE TABLE IF NOT EXISTS metrics (step INTEGER, key TEXT, value_real REAL, value_text TEXT,"
            " PRIMARY KEY (step, key))"
        )
        connection.commit()
        return connection

    def write_checkpoint(self, step: int | None, step_for_metadata: int | None = None, enospc: bool = False) -> None:
        """A step checkpoint (or the final file when step is None), optimizer.pt, and pruning of old ones.

        With enospc, the disk fills up before the file's end: it is left truncated, as save_file leaves it.
        """
        suffix = "" if step is None else f"_{step:09d}"
        path = self.save_root / f"{self.name}{suffix}.safetensors"
        time.sleep(env_float("FAKE_AITK_SAVE_SECONDS", 0.0))  # a real save pauses the run ~2 s
        write_lora(path, self.name, step if step is not None else step_for_metadata or 0, self.rank)
        if enospc:
            data = path.read_bytes()
            path.write_bytes(data[:-16])  # the header made it, the tensor data did not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        if step is not None:
            self.last_save_step = step
        say(f"Saved checkpoint to {path}")
        (self.save_root / "optimizer.pt").write_bytes(os.urandom(64))
        say(f"Saved optimizer to {self.save_root / 'optimizer.pt'}")
        if step is not None:
            self.prune()

    def prune(self) -> None:
        """Keep only the newest save.max_step_saves_to_keep step checkpoints."""
        keep = int(self.save.get("max_step_saves_to_keep", 4))
        pattern = re.compile(rf"^{re.escape(self.name)}_\d{{9}}\.safetensors$")
        saves = sorted(p for p in self.save_root.iterdir() if pattern.match(p.name))
        for old in saves[: max(0, len(saves) - keep)]:
            say(f"Removing old save: {old}")
            old.unlink()

    def write_samples(self, step: int) -> None:
        """One tiny image per prompt, named <ms-epoch>__<step:09d>_<i>.<fmt>."""
        prompts = self.prompts()
        if not prompts:
            return
        fmt = str(self.sample.get("format", "jpg")).lower()
        folder = self.save_root / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(len(prompts)):
            stamp = int(time.time() * 1000)
            (folder / f"{stamp}__{step:09d}_{index}.{fmt}").write_bytes(image_bytes(fmt))


# ----------------------------------------------------------------------------- the command line


class Tee:
    """-l: copy a stream into a log file. It has no .encoding, which is why real tqdm then draws ASCII."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.log.write(text)
        self.log.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()


def print_failure_banner(failures: int = 1) -> None:
    """The banner run.py prints before re-raising a job's exception."""
    say()
    say(BANNER)
    say("Result:")
    say(" - 0 completed jobs")
    if failures:
        say(f" - {failures} failure{'' if failures == 1 else 's'}")
    say(BANNER)


def main() -> None:
    """run.py's main(): run each config in turn; an error exits 1, SIGINT exits 0 with 'Job stopped'."""
    parser = argparse.ArgumentParser()
    parser.add_argument("config_file_list", nargs="+", type=str)
    parser.add_argument("-r", "--recover", action="store_true")
    parser.add_argument("-n", "--name", type=str, default=None)
    parser.add_argument("-l", "--log", type=str, default=None)
    args = parser.parse_args()
    if os.environ.get("FAKE_AITK_IGNORE_SIGINT") == "1":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    ascii_bar = os.environ.get("FAKE_AITK_ASCII") == "1"
    if args.log:
        if os.path.dirname(args.log):
            os.makedirs(os.path.dirname(args.log), exist_ok=True)
        log = open(args.log, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        sys.stdout, sys.stderr = Tee(sys.stdout, log), Tee(sys.stderr, log)  # type: ignore[assignment]
        ascii_bar = True
    count = len(args.config_file_list)
    if runs := os.environ.get("FAKE_AITK_RUN_LOG"):
        # One short O_APPEND write per start: lines from concurrent trainers never interleave.
        with open(runs, "a", encoding="utf-8") as record:
            record.write(" ".join(os.path.abspath(c) for c in args.config_file_list) + f" {os.getpid()}\n")
    say(f"Running {count} job{'' if count == 1 else 's'}")
    for config_file in args.config_file_list:
        job: Job | None = None
        try:
            job = Job(load_config(config_file, args.name), ascii_bar)
            job.run()
        except Exception as exc:
            if job is not None and job.control is not None and not isinstance(exc, JobStopped):
                job.control.write(status="error", info=str(exc), step=job.last_save_step)
            say(f"Error running job: {exc}")
            if not args.recover:
                print_failure_banner()
                raise
        except KeyboardInterrupt:
            if CURRENT_BAR is not None:
                CURRENT_BAR.close()
            if job is not None and job.control is not None:
                job.control.write(status="stopped", info="Job stopped", step=job.last_save_step)
            if os.environ.get("FAKE_AITK_OLD_SIGINT") == "1":
                # Checkouts before 2026-07-22: the Result banner, then the process dies by the SIGINT itself.
                print_failure_banner(failures=0)
                raise
            if not args.recover:
                say()
                say(BANNER)
                say("Job stopped")
                say(BANNER)
                sys.exit(0)


if __name__ == "__main__":
    main()
