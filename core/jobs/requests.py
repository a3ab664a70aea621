"""Job requests as both adapters receive them: `{"type": ..., ...fields}`, one set of models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field

from core.jobs.caption import CaptionOptions, CaptionParams
from core.jobs.generation import GenerateParams
from core.training.params import TrainParams

AUTOCAPTION_DESCRIPTION = (
    "Caption the images that have none before training, as the job's first phase (`phase: captioning`): "
    "`true` with the default captioning model, or an object with `model`, `prefix`, `suffix`, `max_length`."
)


def _autocaption(value: Any) -> Any:
    # true and false read as the options they mean, so a bad object's error names its own field
    # (autocaption.modle) rather than the boolean branch of a union.
    if value is True:
        return CaptionOptions()
    if value is False or value is None:
        return None
    if not isinstance(value, dict | CaptionOptions):
        raise ValueError("must be true, false or an object with model, prefix, suffix and max_length")
    return value


def _boolean_too(schema: dict[str, Any]) -> None:
    # The schema shows what callers may send: true/false as well as the options object.
    schema.setdefault("anyOf", []).insert(0, {"type": "boolean"})


Autocaption = Annotated[CaptionOptions | None, BeforeValidator(_autocaption)]


class WebhookFields(BaseModel):
    """Where to POST the finished job (signed, Standard Webhooks), and whether to POST progress too."""

    webhook: str | None = Field(
        None, max_length=2048, description="An http(s) URL that receives the final job (and progress, if asked)."
    )
    webhook_progress: bool = Field(False, description="Also POST throttled progress while the job runs.")


# The fields that steer a job's notifications, not its work: they never reach the trainer's parameters.
WEBHOOK_FIELDS = frozenset({"webhook", "webhook_progress"})


class TrainRequest(TrainParams, WebhookFields):
    """Start a LoRA training from simple parameters; lorapod writes the ai-toolkit config."""

    type: Literal["train"] = "train"
    autocaption: Autocaption = Field(None, description=AUTOCAPTION_DESCRIPTION, json_schema_extra=_boolean_too)


class TrainYamlRequest(WebhookFields):
    """Start a training from a whole ai-toolkit config given as a YAML (or JSON) string."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["train_with_yaml"] = "train_with_yaml"
    yaml_config: str = Field(
        validation_alias=AliasChoices("yaml_config", "config"),
        min_length=1,
        description="The ai-toolkit config as YAML text (`config` is accepted too, as the seed did).",
    )
    autocaption: Autocaption = Field(None, description=AUTOCAPTION_DESCRIPTION, json_schema_extra=_boolean_too)

    @property
    def text(self) -> str:
        """The YAML text."""
        return self.yaml_config


class GenerateRequest(GenerateParams, WebhookFields):
    """Generate images from a base model with an optional LoRA."""

    type: Literal["generate"] = "generate"


class CaptionRequest(CaptionParams, WebhookFields):
    """Caption a dataset's images with a captioning model (by default only those without a caption)."""

    # "caption" on REST, "caption_dataset" on the contract; each adapter takes both.
    type: Literal["caption", "caption_dataset"] = "caption"


AnyJobRequest = TrainRequest | TrainYamlRequest | GenerateRequest | CaptionRequest
JobRequest = Annotated[AnyJobRequest, Field(discriminator="type")]
JOB_REQUEST_MODELS: dict[str, type[AnyJobRequest]] = {
    "train": TrainRequest,
    "train_with_yaml": TrainYamlRequest,
    "generate": GenerateRequest,
    "caption_dataset": CaptionRequest,
    "caption": CaptionRequest,
}


def job_type_of(payload: dict[str, Any]) -> str | None:
    """The contract type of a payload; no type but a prompt means generate."""
    kind = payload.get("type")
    if kind is None and ("prompt" in payload or "prompts" in payload):
        return "generate"
    return kind if isinstance(kind, str) else None
