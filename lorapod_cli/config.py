"""Where the CLI talks to and with which key: flags, the environment, or a 0600 config file; never a key flag."""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from lorapod_cli.errors import CliError, ExitCode

CONFIG_ENV = "LORAPOD_CONFIG"
DEFAULT_CONFIG = Path("~/.config/lorapod/config.toml")
KEYS = ("url", "endpoint", "api_key", "runpod_api_key")


@dataclass(frozen=True)
class Target:
    """A pod's REST API (url) or a RunPod endpoint (endpoint id), with the key that goes with it."""

    url: str | None
    endpoint: str | None
    api_key: str | None  # LORAPOD_API_KEY for a pod, RUNPOD_API_KEY for an endpoint

    @property
    def label(self) -> str:
        """What the target is, for messages (never the key)."""
        return f"endpoint {self.endpoint}" if self.endpoint else str(self.url)


def config_path() -> Path:
    """The config file: $LORAPOD_CONFIG or ~/.config/lorapod/config.toml."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()


def read_config(path: Path | None = None) -> dict[str, str]:
    """The [default] table of the config file; refused when it holds a key and others can read it."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"config file {path}: {exc}", ExitCode.usage) from exc
    table = data.get("default", data)
    values = {key: str(table[key]) for key in KEYS if isinstance(table.get(key), str) and table[key]}
    unknown = sorted(set(table) - set(KEYS) - {"default"})
    if unknown:
        raise CliError(f"config file {path}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})", ExitCode.usage)
    mode = stat.S_IMODE(path.stat().st_mode)
    if ("api_key" in values or "runpod_api_key" in values) and mode & 0o077:
        raise CliError(
            f"config file {path} holds an API key but is readable by others (mode {mode:o}); run: chmod 600 {path}",
            ExitCode.usage,
        )
    return values


def resolve_target(url: str | None, endpoint: str | None) -> Target:
    """The target from --url/--endpoint (or LORAPOD_URL/LORAPOD_ENDPOINT), then the config file, then localhost."""
    config = read_config()
    if url and endpoint:
        raise CliError("--url and --endpoint: give one of them, not both", ExitCode.usage)
    if not url and not endpoint:
        url, endpoint = config.get("url"), config.get("endpoint")
        if url and endpoint:
            raise CliError(f"config file {config_path()}: set url or endpoint, not both", ExitCode.usage)
    if endpoint:
        key = os.environ.get("RUNPOD_API_KEY") or config.get("runpod_api_key")
        if not key:
            raise CliError(
                "--endpoint needs RUNPOD_API_KEY in the environment or runpod_api_key in the config file",
                ExitCode.usage,
            )
        return Target(url=None, endpoint=endpoint, api_key=key)
    url = (url or "http://127.0.0.1:8000").rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"--url: {url!r} is not an http:// or https:// address", ExitCode.usage)
    return Target(url=url, endpoint=None, api_key=os.environ.get("LORAPOD_API_KEY") or config.get("api_key"))
