"""A caller's ai-toolkit YAML: every local path stays in the workspace by one rule; secrets go by one rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from app.calls.store import stored_input
from core.errors import InvalidInput
from core.redaction import is_secret_key, redact
from core.storage.workspace import Workspace
from core.training.yaml_rewrite import parse_yaml_config

JOB = "train_00000000beef"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path / "ws").ensure()
    (workspace.training_data / "faces").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(workspace.training_data / "faces" / "a.png")
    (workspace.models / "extra.safetensors").write_bytes(b"x")
    return workspace


def config_with(**process_extra: Any) -> dict[str, Any]:
    process: dict[str, Any] = {
        "type": "sd_trainer",
        "datasets": [{"folder_path": "training_data/faces"}],
        "train": {"steps": 10},
        "model": {"name_or_path": "org/model"},
    }
    for section, values in process_extra.items():
        if isinstance(values, dict) and isinstance(process.get(section), dict):
            process[section] = {**process[section], **values}
        else:
            process[section] = values
    return {"job": "extension", "config": {"name": "m", "process": [process]}}


# Each (section, value-holder, field) is a key the real trainer opens as a file; the last ones do not exist
# in ai-toolkit today: the rule must hold for keys nobody listed.
PATH_KEYS = [
    ({"network": {"type": "lora", "pretrained_lora_path": "{v}"}}, "config.process[0].network.pretrained_lora_path"),
    ({"model": {"inference_lora_path": "{v}"}}, "config.process[0].model.inference_lora_path"),
    ({"model": {"extras_name_or_path": "{v}"}}, "config.process[0].model.extras_name_or_path"),
    ({"model": {"refiner_name_or_path": "{v}"}}, "config.process[0].model.refiner_name_or_path"),
    ({"adapter": {"name_or_path": "{v}"}}, "config.process[0].adapter.name_or_path"),
    ({"adapter": {"image_encoder_path": "{v}"}}, "config.process[0].adapter.image_encoder_path"),
    ({"sample": {"samples": [{"prompt": "p", "ctrl_img": "{v}"}]}}, "config.process[0].sample.samples[0].ctrl_img"),
    ({"model": {"model_paths": {"unet": "{v}"}}}, "config.process[0].model.model_paths.unet"),
    ({"model": {"future_weights": ["org/x", "{v}"]}}, "config.process[0].model.future_weights[1]"),
    ({"brand_new_section": {"whatever": "{v}"}}, "config.process[0].brand_new_section.whatever"),
]


def fill(template: dict[str, Any], value: str) -> dict[str, Any]:
    return json.loads(json.dumps(template).replace("{v}", value))


@pytest.mark.parametrize(("template", "field"), PATH_KEYS)
@pytest.mark.parametrize("outside", ["/etc/shadow", "../../../etc/passwd", "~/.ssh/id_rsa", "models/../../x"])
def test_every_path_valued_key_is_contained(ws: Workspace, template: dict[str, Any], field: str, outside: str) -> None:
    text = yaml.safe_dump(config_with(**fill(template, outside)))
    with pytest.raises(InvalidInput) as err:
        parse_yaml_config(text, workspace=ws, job_id=JOB)
    assert err.value.field == field


@pytest.mark.parametrize(("template", "field"), PATH_KEYS)
def test_paths_inside_the_workspace_are_rewritten_absolute(ws: Workspace, template: dict[str, Any], field: str) -> None:
    plan = parse_yaml_config(
        yaml.safe_dump(config_with(**fill(template, "./models/extra.safetensors"))), workspace=ws, job_id=JOB
    )
    assert str(ws.models / "extra.safetensors") in json.dumps(plan.config)
    assert "./models/extra.safetensors" not in json.dumps(plan.config)


def test_hub_ids_urls_and_prompts_are_not_paths(ws: Workspace) -> None:
    data = config_with(
        network={"type": "lora", "pretrained_lora_path": "someone/some-lora"},
        model={"extras_name_or_path": "black-forest-labs/FLUX.1-dev"},
        sample={"prompts": ["/imagine a cat", "../weird prompt"], "neg": "/no"},
        trigger_word="/sks",
    )
    data["config"]["process"][0]["model"]["name_or_path"] = "https://civitai.com/api/download/models/1"
    plan = parse_yaml_config(yaml.safe_dump(data), workspace=ws, job_id=JOB)
    process = plan.config["config"]["process"][0]
    assert process["network"]["pretrained_lora_path"] == "someone/some-lora"
    assert process["sample"]["prompts"] == ["/imagine a cat", "../weird prompt"]
    assert process["trigger_word"] == "/sks"
    assert process["model"]["name_or_path"].startswith("https://")


def test_file_urls_are_refused(ws: Workspace) -> None:
    text = yaml.safe_dump(config_with(model={"vae_path": "file:///etc/passwd"}))
    with pytest.raises(InvalidInput) as err:
        parse_yaml_config(text, workspace=ws, job_id=JOB)
    assert err.value.field == "config.process[0].model.vae_path"


# ----- secrets


def test_secret_keys_of_every_spelling_and_nested_blocks_are_removed(ws: Workspace) -> None:
    data = config_with(
        save={"save_every": 5, "hub_key": "SECRET-A", "authorization": "SECRET-B"},
        secrets={"anything": "SECRET-C", "nested": {"deeper": "SECRET-D"}},
        logging={"wandbApiKey": "SECRET-E", "aws_access_key_id": "SECRET-F", "x-auth": "SECRET-G"},
        notes={"innocent_name": "hf_" + "a" * 34},
    )
    plan = parse_yaml_config(yaml.safe_dump(data), workspace=ws, job_id=JOB)
    stored = plan.to_yaml() + json.dumps(plan.warnings)
    for marker in ("SECRET-", "hf_aaaa"):
        assert marker not in stored
    process = plan.config["config"]["process"][0]
    assert process["save"] == {"save_every": 5}
    assert "secrets" not in process
    assert len([w for w in plan.warnings if "secret" in w]) == 7


def test_real_ai_toolkit_keys_that_contain_credential_words_are_kept(ws: Workspace) -> None:
    data = config_with(
        datasets=[
            {
                "folder_path": "training_data/faces",
                "keep_tokens": 1,
                "shuffle_tokens": True,
                "token_dropout_rate": 0.1,
            }
        ],
        model={"max_token_length": 77},
        guidance={"bypass_guidance_embedding": True},
    )
    plan = parse_yaml_config(yaml.safe_dump(data), workspace=ws, job_id=JOB)
    process = plan.config["config"]["process"][0]
    assert process["datasets"][0]["keep_tokens"] == 1
    assert process["datasets"][0]["shuffle_tokens"] is True
    assert process["datasets"][0]["token_dropout_rate"] == 0.1
    assert process["model"]["max_token_length"] == 77
    assert process["guidance"]["bypass_guidance_embedding"] is True
    assert not [w for w in plan.warnings if "secret" in w]


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "hf_token",
        "HF_TOKEN",
        "hub_key",
        "authorization",
        "Authorization",
        "secrets",
        "apiKey",
        "api-key",
        "client_secret",
        "db_password",
        "aws_access_key_id",
        "privateKey",
        "bucket_creds",
        "session_cookie",
    ],
)
def test_the_rule_calls_these_secret(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["keep_tokens", "shuffle_tokens", "token_dropout_rate", "max_token_length", "keyword", "monkey", "steps"]
)
def test_the_rule_keeps_these(key: str) -> None:
    assert not is_secret_key(key)


def test_contract_inputs_and_their_yaml_are_stored_redacted() -> None:
    yaml_text = "job: extension\nconfig:\n  name: m\n  hub_key: SECRET-H\n  secrets:\n    a: SECRET-I\n"
    stored = stored_input(
        {
            "type": "train_with_yaml",
            "yaml_config": yaml_text,
            "authorization": "SECRET-J",
            "extra": {"note": "Bearer abcdefghijk"},
        }
    )
    text = json.dumps(stored)
    assert "SECRET-" not in text and "abcdefghijk" not in text
    assert yaml.safe_load(stored["yaml_config"])["config"]["name"] == "m"
    assert redact({"list": [{"password": "p"}]}) == {"list": [{"password": "[redacted]"}]}
