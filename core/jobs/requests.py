"""Job requests as both adapters receive them: `{"type": ..., ...fields}`, one set of models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from core.jobs.generation import GenerateParams
from core.training.params import TrainParams


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


class TrainYamlRequest(WebhookFields):
    """Start a training from a whole ai-toolkit config given as a YAML (or JSON) string."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["train_with_yaml"] = "train_with_yaml"
    yaml_config: str = Field(
        validation_alias=AliasChoices("yaml_config", "config"),
        min_length=1,
        description="The ai-toolkit config as YAML text (`config` is accepted too, as the seed did).",
    )

    @property
    def text(self) -> str:
        """The YAML text."""
        return self.yaml_config


class GenerateRequest(GenerateParams, WebhookFields):
    """Generate images from a base model with an optional LoRA."""

    type: Literal["generate"] = "generate"


JobRequest = Annotated[TrainRequest | TrainYamlRequest | GenerateRequest, Field(discriminator="type")]
JOB_REQUEST_MODELS: dict[str, type[TrainRequest | TrainYamlRequest | GenerateRequest]] = {
    "train": TrainRequest,
    "train_with_yaml": TrainYamlRequest,
    "generate": GenerateRequest,
}


def job_type_of(payload: dict[str, Any]) -> str | None:
    """The contract type of a payload; no type but a prompt means generate."""
    kind = payload.get("type")
    if kind is None and ("prompt" in payload or "prompts" in payload):
        return "generate"
    return kind if isinstance(kind, str) else None
