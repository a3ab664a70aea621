"""The one rule for paths in a caller's ai-toolkit config: every value naming a local file stays in the workspace.

ai-toolkit reads files from many keys (`model.name_or_path`, `network.pretrained_lora_path`,
`model.inference_lora_path`, `model.extras_name_or_path`, `adapter.name_or_path`, `sample.samples[].ctrl_img`,
`model.model_paths`, ...), and new versions add more. A list of key names would age, so the rule goes by the
value instead, under every key: a text that the filesystem would read as a local path (absolute, `~`, `./`,
`../`, a `..` segment, a backslash, or a `file:` URL) must resolve inside the workspace, and is rewritten to
that absolute path. Hub repo ids (`org/name`) and URLs are not local paths and pass. Only a few keys hold free
text that may legitimately start with a slash (prompts, captions, the trigger word); they are the exceptions,
and a new free-text key is refused rather than let through (the rule fails closed).
"""

from __future__ import annotations

from typing import Any

from core.errors import InvalidInput
from core.storage.workspace import Workspace

# Keys whose values are prose the trainer never opens as a file.
FREE_TEXT_KEYS = frozenset({"prompt", "prompts", "neg", "trigger_word", "default_caption", "caption", "name"})


def looks_local(value: str) -> bool:
    """Whether a config text would be read by ai-toolkit as a path on this machine."""
    text = value.strip()
    if not text:
        return False
    if text.startswith(("/", "~", "./", "../", "file:")) or text in (".", ".."):
        return True
    return "\\" in text or ".." in text.split("/")


def contain_paths(value: Any, workspace: Workspace, path: str, key: str = "") -> Any:
    """A copy of value with every local-path text resolved inside the workspace; PathEscape names the field."""
    if isinstance(value, dict):
        return {k: contain_paths(v, workspace, f"{path}.{k}" if path else str(k), str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [contain_paths(item, workspace, f"{path}[{i}]", key) for i, item in enumerate(value)]
    if not isinstance(value, str) or key.lower() in FREE_TEXT_KEYS or not looks_local(value):
        return value
    text = value.strip()
    if text.startswith("file:"):
        raise InvalidInput(path, "file: URLs are not allowed; give a path inside the workspace")
    return str(workspace.resolve(text, field=path))
