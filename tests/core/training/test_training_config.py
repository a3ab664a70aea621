"""ai-toolkit configs from simple parameters and from raw YAML: keys, defaults, validation, sandboxing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from core.contract.validation import parse
from core.errors import InvalidInput, PathEscape
from core.storage.workspace import Workspace
from core.training.base_models import FAMILIES, family_for
from core.training.builder import TrainingPlan, build_training_config, has_images
from core.training.params import TrainParams
from core.training.yaml_rewrite import parse_yaml_config

JOB = "train_0123456789ab"


def make_png(path: Path) -> Path:
    """Write a tiny real PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, format="PNG")
    return path


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path / "ws").ensure()
    make_png(workspace.training_data / "faces" / "img1.png")
    (workspace.training_data / "faces" / "img1.txt").write_text("a photo of [trigger]")
    return workspace


def build(ws: Workspace, **fields: Any) -> TrainingPlan:
    values: dict[str, Any] = {"training_name": "faces"}
    values.update(fields)
    return build_training_config(parse(TrainParams, values), workspace=ws, job_id=JOB)


def process_of(plan: TrainingPlan) -> dict[str, Any]:
    return plan.config["config"]["process"][0]


def refused(exc: pytest.ExceptionInfo[InvalidInput], field: str) -> str:
    """Assert the error names the field and return its reason."""
    assert exc.value.field == field, exc.value.message
    assert exc.value.message.startswith(f"{field}: ")
    return exc.value.reason


# -- simple parameters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "repo", "model_keys", "quantize", "scheduler"),
    [
        ("flux-dev", "black-forest-labs/FLUX.1-dev", {"arch": "flux", "is_flux": True}, True, "flowmatch"),
        ("flux-schnell", "black-forest-labs/FLUX.1-schnell", {"arch": "flux", "is_flux": True}, True, "flowmatch"),
        ("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", {"arch": "sdxl", "is_xl": True}, False, "ddpm"),
        ("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", {"arch": "sd1"}, False, "ddpm"),
    ],
)
def test_each_family_writes_every_key_explicitly(
    ws: Workspace, alias: str, repo: str, model_keys: dict[str, Any], quantize: bool, scheduler: str
) -> None:
    plan = build(ws, base_model=alias, rank=24, steps=321, learning_rate=2e-4, caption_dropout_rate=0.1)
    proc = process_of(plan)
    assert plan.config["job"] == "extension"
    assert proc["type"] == "sd_trainer"
    assert proc["device"] == "cuda"
    assert proc["network"] == {"type": "lora", "linear": 24, "linear_alpha": 24}
    assert proc["save"]["dtype"] == "float16"
    assert proc["save"]["push_to_hub"] is False
    train = proc["train"]
    assert (train["steps"], train["lr"], train["dtype"]) == (321, 2e-4, "bf16")
    assert train["noise_scheduler"] == scheduler
    assert proc["sample"]["sampler"] == scheduler
    assert train["gradient_accumulation"] == 1
    assert train["train_unet"] is True and train["train_text_encoder"] is False
    assert set(train["ema_config"]) == {"use_ema", "ema_decay"}
    dataset = proc["datasets"][0]
    assert dataset["caption_dropout_rate"] == 0.1
    assert dataset["caption_ext"] == "txt"
    assert dataset["shuffle_tokens"] is False
    model = proc["model"]
    assert model["name_or_path"] == repo == plan.base_model
    assert {k: model[k] for k in model_keys} == model_keys
    assert model["quantize"] is quantize
    for section in ("sample", "logging"):
        assert proc[section], section
    for key in ("sample_every", "width", "height", "prompts", "neg", "seed", "walk_seed", "guidance_scale"):
        assert key in proc["sample"], key
    assert proc["logging"]["use_ui_logger"] is False
    assert plan.config["meta"] == {"name": "[name]", "version": "1.0", "lorapod_job": JOB}


def test_schnell_trains_with_its_assistant_adapter(ws: Workspace) -> None:
    model = process_of(build(ws, base_model="flux-schnell"))["model"]
    assert model["assistant_lora_path"] == "ostris/FLUX.1-schnell-training-adapter"
    assert "assistant_lora_path" not in process_of(build(ws, base_model="flux-dev"))["model"]


def test_defaults_follow_the_replicate_trainer(ws: Workspace) -> None:
    plan = build(ws)
    proc = process_of(plan)
    assert plan.base_model == "black-forest-labs/FLUX.1-dev"
    assert plan.total_steps == proc["train"]["steps"] == 1000
    assert proc["train"]["lr"] == 4e-4
    assert proc["network"]["linear"] == proc["network"]["linear_alpha"] == 16
    assert proc["train"]["batch_size"] == 1
    assert proc["train"]["optimizer"] == "adamw8bit"
    assert proc["save"]["save_every"] == 250
    assert proc["save"]["max_step_saves_to_keep"] == 4
    assert proc["datasets"][0]["caption_dropout_rate"] == 0.05
    assert proc["datasets"][0]["resolution"] == [512, 768, 1024]
    assert proc["datasets"][0]["cache_latents_to_disk"] is True
    assert proc["train"]["gradient_checkpointing"] is True
    assert proc["model"]["quantize"] is True
    assert plan.name == "faces"
    assert plan.warnings == []


def test_overrides_land_in_their_keys(ws: Workspace) -> None:
    proc = process_of(
        build(
            ws,
            name="my.lora-v2",
            base_model="sdxl",
            lora_rank=8,
            alpha=4,
            batch_size=2,
            optimizer="Prodigy",
            resolution="1024, 768",
            quantize=True,
            seed=7,
            save_every=100,
        )
    )
    assert proc["network"] == {"type": "lora", "linear": 8, "linear_alpha": 4}
    assert proc["train"]["batch_size"] == 2
    assert proc["train"]["optimizer"] == "prodigy"
    assert proc["datasets"][0]["resolution"] == [768, 1024]
    assert proc["model"]["quantize"] is True
    assert proc["training_seed"] == proc["sample"]["seed"] == 7
    assert proc["save"]["save_every"] == 100
    assert proc["training_folder"].endswith(JOB)


def test_training_folder_is_the_jobs_own_output_folder(ws: Workspace) -> None:
    plan = build(ws, name="mine")
    proc = process_of(plan)
    assert Path(proc["training_folder"]) == ws.output / JOB
    assert Path(proc["training_folder"]).is_absolute()
    assert plan.save_root == ws.output / JOB / "mine"
    assert plan.datasets == [ws.training_data / "faces"]
    assert Path(proc["datasets"][0]["folder_path"]) == ws.training_data / "faces"


def test_yaml_round_trips(ws: Workspace) -> None:
    plan = build(ws, trigger_word="sks", sample_prompts=["a photo of [trigger]"], learning_rate=1e-6)
    text = plan.to_yaml()
    assert yaml.safe_load(text) == plan.config
    assert text.startswith("job: extension\n")
    # what lorapod writes, it accepts back unchanged but for the job it belongs to
    again = parse_yaml_config(text, workspace=ws, job_id=JOB)
    assert again.config == plan.config
    assert again.total_steps == plan.total_steps


def test_trigger_word_and_prompts_land_in_their_keys(ws: Workspace) -> None:
    prompts = ["a photo of [trigger] on a beach", "[trigger] in the snow"]
    proc = process_of(build(ws, trigger_word="  sks  ", sample_prompts=prompts, sample_every=50))
    assert proc["trigger_word"] == "sks"
    assert proc["sample"]["prompts"] == prompts
    assert proc["sample"]["sample_every"] == 50
    assert proc["train"]["disable_sampling"] is False


def test_no_prompts_disables_sampling(ws: Workspace) -> None:
    proc = process_of(build(ws))
    assert proc["sample"]["prompts"] == []
    assert proc["train"]["disable_sampling"] is True
    assert proc["trigger_word"] is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"lora_scale": 1}, "lora_scale"),
        ({"steps": 0}, "steps"),
        ({"steps": 100_001}, "steps"),
        ({"rank": 0}, "rank"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"resolution": 500}, "resolution"),
        ({"resolution": [512, 4096]}, "resolution"),
        ({"resolution": "big"}, "resolution"),
        ({"name": "a/b"}, "name"),
        ({"name": ".."}, "name"),
        ({"name": ".hidden"}, "name"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"trigger_word": "two\nlines"}, "trigger_word"),
        ({"sample_prompts": ["a ${HF_TOKEN} b"]}, "sample_prompts"),
        ({"default_caption": "${HOME}"}, "default_caption"),
        ({"base_model": "models/${HF_TOKEN}"}, "base_model"),
        ({"caption_dropout_rate": 1.5}, "caption_dropout_rate"),
    ],
)
def test_bad_params_name_the_field(ws: Workspace, fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        build(ws, **fields)
    refused(exc, field)


def test_training_name_is_required(ws: Workspace) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse(TrainParams, {"steps": 10})
    assert refused(exc, "training_name") == "is required"


@pytest.mark.parametrize("name", ["../faces", "a/b", "..", "."])
def test_training_name_must_be_a_plain_name(ws: Workspace, name: str) -> None:
    with pytest.raises(PathEscape) as exc:
        build(ws, training_name=name)
    refused(exc, "training_name")


def test_missing_dataset_is_refused_before_launch(ws: Workspace) -> None:
    with pytest.raises(InvalidInput) as exc:
        build(ws, training_name="nope")
    assert "does not exist under training_data/" in refused(exc, "training_name")


def test_dataset_without_images_is_refused(ws: Workspace) -> None:
    folder = ws.training_data / "empty"
    folder.mkdir()
    (folder / "only.txt").write_text("caption")
    make_png(folder / ".hidden.png")
    make_png(folder / ".cache" / "x.png")
    make_png(folder / "_controls" / "x.png")
    with pytest.raises(InvalidInput) as exc:
        build(ws, training_name="empty")
    assert "holds no images" in refused(exc, "training_name")


def test_images_are_found_in_subfolders(ws: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "nested"
    assert not has_images(folder.parent / "missing")
    make_png(folder / "a" / "b" / "IMG.JPG")
    assert has_images(folder)


def test_dataset_symlinked_outside_is_refused(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    make_png(outside / "x.png")
    (ws.training_data / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscape) as exc:
        build(ws, training_name="linked")
    refused(exc, "training_name")


def test_unknown_repo_needs_a_family(ws: Workspace) -> None:
    with pytest.raises(InvalidInput) as exc:
        build(ws, base_model="someone/custom-flux")
    reason = refused(exc, "model_family")
    assert all(key in reason for key in FAMILIES)
    proc = process_of(build(ws, base_model="someone/custom-flux", model_family="flux-dev"))
    assert proc["model"]["name_or_path"] == "someone/custom-flux"
    assert proc["model"]["arch"] == "flux"


def test_known_repo_finds_its_family(ws: Workspace) -> None:
    family, path = family_for("StabilityAI/stable-diffusion-xl-base-1.0", None, ws)
    assert family.key == "sdxl" and family.pipeline == "sdxl"
    assert path == "StabilityAI/stable-diffusion-xl-base-1.0"
    with pytest.raises(InvalidInput) as exc:
        family_for("sdxl", "sd15", ws)
    refused(exc, "model_family")
    with pytest.raises(InvalidInput) as exc:
        family_for("not a repo", None, ws)
    refused(exc, "base_model")


def test_local_model_under_models(ws: Workspace) -> None:
    local = ws.models / "my-sdxl"
    local.mkdir()
    (local / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    family, path = family_for("models/my-sdxl", None, ws)
    assert (family.key, Path(path)) == ("sdxl", local)

    flux = ws.models / "flux"
    (flux / "transformer").mkdir(parents=True)
    (flux / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    (flux / "transformer" / "config.json").write_text(json.dumps({"guidance_embeds": False}))
    assert family_for(str(flux), None, ws)[0].key == "flux-schnell"

    (ws.models / "blob.safetensors").write_bytes(b"x")
    with pytest.raises(InvalidInput) as exc:
        family_for("models/blob.safetensors", None, ws)
    refused(exc, "model_family")
    assert family_for("models/blob.safetensors", "sd15", ws)[0].key == "sd15"

    for bad in ("models/absent", "/etc", "models/../training_data/faces"):
        with pytest.raises(InvalidInput) as exc:
            family_for(bad, "sd15", ws)
        refused(exc, "base_model")


# -- raw YAML --------------------------------------------------------------------------------------------------


MINIMAL = """
config:
  name: my_lora
  process:
    - type: sd_trainer
      training_folder: /somewhere/else
      datasets:
        - folder_path: training_data/faces
      model:
        name_or_path: stable-diffusion-v1-5/stable-diffusion-v1-5
      train:
        steps: 42
        lr: 1e-4
"""


def yaml_with(**process_changes: Any) -> str:
    data = yaml.safe_load(MINIMAL)
    proc = data["config"]["process"][0]
    for key, value in process_changes.items():
        if value is None:
            proc.pop(key, None)
        else:
            proc[key] = value
    return yaml.safe_dump(data)


def parse_refused(ws: Workspace, text: str, field: str) -> str:
    with pytest.raises(InvalidInput) as exc:
        parse_yaml_config(text, workspace=ws, job_id=JOB)
    return refused(exc, field)


def test_minimal_yaml_is_accepted_and_rewritten(ws: Workspace) -> None:
    plan = parse_yaml_config(MINIMAL, workspace=ws, job_id=JOB)
    proc = process_of(plan)
    assert plan.config["job"] == "extension"
    assert plan.name == "my_lora"
    assert plan.total_steps == 42
    assert plan.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert Path(proc["training_folder"]) == ws.output / JOB
    assert plan.save_root == ws.output / JOB / "my_lora"
    assert any("training_folder" in w and "/somewhere/else" in w for w in plan.warnings)
    assert proc["datasets"][0]["folder_path"] == str(ws.training_data / "faces")
    assert plan.datasets == [ws.training_data / "faces"]
    assert proc["train"]["lr"] == 1e-4 and isinstance(proc["train"]["lr"], float)
    assert plan.config["meta"]["lorapod_job"] == JOB
    assert yaml.safe_load(plan.to_yaml()) == plan.config


def test_json_is_accepted(ws: Workspace) -> None:
    plan = parse_yaml_config(json.dumps(yaml.safe_load(yaml_with(train=None))), workspace=ws, job_id=JOB)
    assert plan.total_steps == 1000  # ai-toolkit's own default when train.steps is absent
    assert plan.warnings  # the training_folder it carried


def test_no_training_folder_means_no_warning(ws: Workspace) -> None:
    plan = parse_yaml_config(yaml_with(training_folder=None), workspace=ws, job_id=JOB)
    assert plan.warnings == []
    assert Path(process_of(plan)["training_folder"]) == ws.output / JOB


def test_env_references_are_refused(ws: Workspace) -> None:
    text = MINIMAL + "      sample:\n        prompts: ['photo ${HF_TOKEN}']\n"
    assert "${" in parse_refused(ws, text, "yaml_config")


def test_escaped_env_references_are_refused(ws: Workspace) -> None:
    # "\x24" is '$' once YAML decodes it, so the raw-text check alone would miss it
    text = MINIMAL + '      sample:\n        prompts: ["photo \\x24{HF_TOKEN}"]\n'
    assert "${" not in text
    assert "environment" in parse_refused(ws, text, "config.process[0].sample.prompts[0]")


def test_dataset_folder_named_like_a_variable_is_refused(ws: Workspace) -> None:
    make_png(ws.training_data / "${HF_TOKEN}" / "a.png")
    with pytest.raises(InvalidInput) as exc:
        build(ws, training_name="${HF_TOKEN}")
    refused(exc, "training_name")


def test_yaml_bomb_is_refused_fast(ws: Workspace) -> None:
    levels = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    started = time.monotonic()
    reason = parse_refused(ws, "\n".join(levels), "yaml_config")
    assert time.monotonic() - started < 2
    assert "nodes" in reason


def test_a_wall_of_nodes_is_refused_fast(ws: Workspace) -> None:
    text = "a: [" + ",".join(["1"] * 60_000) + "]\n"
    started = time.monotonic()
    assert "nodes" in parse_refused(ws, text, "yaml_config")
    assert time.monotonic() - started < 5


def test_many_aliases_are_refused(ws: Workspace) -> None:
    text = "a: &x 1\nb: [" + ", ".join(["*x"] * 150) + "]\n"
    assert "aliases" in parse_refused(ws, text, "yaml_config")


def test_recursive_alias_and_deep_nesting_are_refused(ws: Workspace) -> None:
    assert "recursive" in parse_refused(ws, "a: &x [1, *x]\n", "yaml_config")
    assert "nested" in parse_refused(ws, "[" * 500 + "]" * 500, "yaml_config")


def test_oversize_is_refused(ws: Workspace) -> None:
    text = MINIMAL + "#" + "x" * 2000 + "\n"
    with pytest.raises(InvalidInput) as exc:
        parse_yaml_config(text, workspace=ws, job_id=JOB, max_bytes=1024)
    assert "larger than 1024 bytes" in refused(exc, "yaml_config")
    assert parse_yaml_config(text, workspace=ws, job_id=JOB).name == "my_lora"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text", "", "{unclosed: [1, 2"])
def test_not_a_mapping_is_refused(ws: Workspace, text: str) -> None:
    assert parse_refused(ws, text, "yaml_config")


def test_missing_or_bad_name_is_refused(ws: Workspace) -> None:
    data = yaml.safe_load(MINIMAL)
    del data["config"]["name"]
    assert "missing" in parse_refused(ws, yaml.safe_dump(data), "config.name")
    data["config"]["name"] = "../up"
    parse_refused(ws, yaml.safe_dump(data), "config.name")


def test_process_type_rules(ws: Workspace) -> None:
    assert "missing" in parse_refused(ws, yaml_with(type=None), "config.process[0].type")
    assert "database" in parse_refused(ws, yaml_with(type="ui_trainer"), "config.process[0].type")
    assert "not a LoRA trainer" in parse_refused(ws, yaml_with(type="dataset_tools"), "config.process[0].type")
    for trainer in ("sd_trainer", "diffusion_trainer", "textual_inversion_trainer"):
        assert process_of(parse_yaml_config(yaml_with(type=trainer), workspace=ws, job_id=JOB))["type"] == trainer


def test_process_list_rules(ws: Workspace) -> None:
    data = yaml.safe_load(MINIMAL)
    data["config"]["process"] = []
    parse_refused(ws, yaml.safe_dump(data), "config.process")
    data["config"]["process"] = [yaml.safe_load(MINIMAL)["config"]["process"][0]] * 2
    assert "one training per job" in parse_refused(ws, yaml.safe_dump(data), "config.process")


def test_job_must_be_extension(ws: Workspace) -> None:
    assert "extension" in parse_refused(ws, "job: train\n" + MINIMAL, "job")
    assert parse_yaml_config("job: extension\n" + MINIMAL, workspace=ws, job_id=JOB).config["job"] == "extension"


def test_model_name_or_path_is_required(ws: Workspace) -> None:
    parse_refused(ws, yaml_with(model={"arch": "sd1"}), "config.process[0].model.name_or_path")
    parse_refused(ws, yaml_with(model=None), "config.process[0].model")


@pytest.mark.parametrize("path", ["../../etc", "/etc", "training_data/../../x", "~/x", "training_data%2f..%2f.."])
def test_dataset_paths_outside_the_workspace_are_refused(ws: Workspace, path: str) -> None:
    with pytest.raises(PathEscape) as exc:
        parse_yaml_config(yaml_with(datasets=[{"folder_path": path}]), workspace=ws, job_id=JOB)
    refused(exc, "config.process[0].datasets[0].folder_path")


def test_dataset_symlink_pointing_outside_is_refused(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "secret_images"
    make_png(outside / "x.png")
    (ws.training_data / "sneaky").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscape) as exc:
        parse_yaml_config(yaml_with(datasets=[{"folder_path": "training_data/sneaky"}]), workspace=ws, job_id=JOB)
    refused(exc, "config.process[0].datasets[0].folder_path")


def test_every_dataset_path_key_is_sandboxed_and_rewritten(ws: Workspace) -> None:
    dataset = {
        "folder_path": str(ws.training_data / "faces"),
        "control_path": ["training_data/faces", "/workspace/training_data/faces"],
        "mask_path": "training_data/masks",
    }
    proc = process_of(parse_yaml_config(yaml_with(datasets=[dataset]), workspace=ws, job_id=JOB))
    rewritten = proc["datasets"][0]
    assert rewritten["control_path"] == [str(ws.training_data / "faces")] * 2
    assert rewritten["mask_path"] == str(ws.training_data / "masks")
    bad = dict(dataset, control_path=["training_data/faces", "/etc"])
    with pytest.raises(PathEscape) as exc:
        parse_yaml_config(yaml_with(datasets=[bad]), workspace=ws, job_id=JOB)
    refused(exc, "config.process[0].datasets[0].control_path[1]")
    with pytest.raises(PathEscape) as exc:
        parse_yaml_config(yaml_with(datasets=[dict(dataset, inpaint_path="/etc")]), workspace=ws, job_id=JOB)
    refused(exc, "config.process[0].datasets[0].inpaint_path")


def test_dataset_must_exist_and_hold_images(ws: Workspace) -> None:
    assert "does not exist" in parse_refused(
        ws, yaml_with(datasets=[{"folder_path": "training_data/nope"}]), "config.process[0].datasets[0].folder_path"
    )
    (ws.training_data / "blank").mkdir()
    assert "no images" in parse_refused(
        ws, yaml_with(datasets=[{"folder_path": "training_data/blank"}]), "config.process[0].datasets[0].folder_path"
    )
    parse_refused(ws, yaml_with(datasets=[]), "config.process[0].datasets")
    parse_refused(ws, yaml_with(datasets=[{"caption_ext": "txt"}]), "config.process[0].datasets[0].folder_path")


def test_secret_keys_are_stripped_with_a_warning(ws: Workspace) -> None:
    data = yaml.safe_load(MINIMAL)
    proc = data["config"]["process"][0]
    proc["save"] = {"hf_token": "hf_SECRETVALUE1", "save_every": 10}
    proc["logging"] = {"WANDB_TOKEN": "SECRETVALUE2", "Api_Key": "SECRETVALUE3"}
    data["meta"] = {"password": "SECRETVALUE4", "version": "2"}
    plan = parse_yaml_config(yaml.safe_dump(data), workspace=ws, job_id=JOB)
    text = plan.to_yaml() + json.dumps(plan.warnings)
    assert "SECRETVALUE" not in text
    assert process_of(plan)["save"] == {"save_every": 10}
    assert plan.config["meta"]["version"] == "2"
    stripped = [w for w in plan.warnings if "secret" in w]
    assert len(stripped) == 4
    assert any("config.process[0].save.hf_token" in w for w in stripped)


def test_ui_and_upload_settings_are_taken_over(ws: Workspace) -> None:
    plan = parse_yaml_config(
        yaml_with(sqlite_db_path="./aitk_db.db", save={"push_to_hub": True}, log_dir="logs/tb"),
        workspace=ws,
        job_id=JOB,
    )
    proc = process_of(plan)
    assert "sqlite_db_path" not in proc
    assert proc["save"]["push_to_hub"] is False
    assert proc["log_dir"] == str(ws.logs / "tb")
    assert any("sqlite_db_path" in w for w in plan.warnings)
    assert any("push_to_hub" in w for w in plan.warnings)
    with pytest.raises(PathEscape):
        parse_yaml_config(yaml_with(log_dir="/tmp/tb"), workspace=ws, job_id=JOB)


@pytest.mark.parametrize("steps", [0, -5, "many", 2.5, True])
def test_bad_steps_are_refused(ws: Workspace, steps: Any) -> None:
    parse_refused(ws, yaml_with(train={"steps": steps}), "config.process[0].train.steps")


@pytest.mark.parametrize("key", ["name_or_path", "lora_path", "assistant_lora_path"])
def test_yaml_model_paths_stay_in_the_workspace(ws: Workspace, key: str) -> None:
    text = yaml.safe_dump(
        {
            "job": "extension",
            "config": {
                "name": "m",
                "process": [
                    {
                        "type": "sd_trainer",
                        "model": {"name_or_path": "org/model", key: "/etc/shadow"},
                        "datasets": [{"folder_path": "training_data/faces"}],
                    }
                ],
            },
        }
    )
    with pytest.raises(InvalidInput) as err:
        parse_yaml_config(text, workspace=ws, job_id="train_000000000001")
    assert err.value.field == f"config.process[0].model.{key}"
