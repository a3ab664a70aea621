"""Builders for a tiny, randomly initialised SD 1.5-style diffusers pipeline and LoRAs that fit it.

Nothing is downloaded: the CLIP tokenizer is made from a byte-level vocabulary written to disk. The build
is deterministic (fixed seeds), so two builds give the same weights and therefore the same pixels.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

# The latent is half the image size (two VAE blocks): a 64x64 image is a 32x32 latent.
TINY_MIN_SIZE = 64
_BUILT: list[Path] = []  # the first build of this process, copied for later calls


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins GPT-2/CLIP byte-level BPE uses for bytes."""
    byte_values = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(byte_values)
    unprintable = 0
    for byte in range(256):
        if byte not in byte_values:  # unprintable bytes stand in as code points 256, 257, ... in order
            byte_values.append(byte)
            codes.append(256 + unprintable)
            unprintable += 1
    return [chr(code) for code in codes]


def _write_tokenizer_files(folder: Path) -> tuple[Path, Path, dict[str, int]]:
    """A CLIP vocabulary of single bytes (with and without end-of-word) and an empty merge list."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    vocab.update({symbol + "</w>": len(symbols) + i for i, symbol in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    vocab_file = folder / "vocab.json"
    merges_file = folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    return vocab_file, merges_file, vocab


def _build(dest: Path) -> None:
    """Make the pipeline and save it under dest."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        vocab_file, merges_file, vocab = _write_tokenizer_files(Path(scratch))
        tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)
    end = vocab["<|endoftext|>"]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # Attention in the first down block, so kohya keys such as lora_unet_down_blocks_0_attentions_0_* exist.
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=end,
            pad_token_id=end,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(dest)


def build_tiny_sd15(dest: Path) -> Path:
    """Save a tiny random SD 1.5-style pipeline (diffusers layout) to dest and return dest."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    if _BUILT and (_BUILT[0] / "model_index.json").is_file():
        shutil.copytree(_BUILT[0], dest, dirs_exist_ok=True)
        return dest
    _build(dest)
    _BUILT[:] = [dest]
    return dest


def unet_lora_targets(pipeline_dir: Path) -> list[tuple[str, int, int]]:
    """(module name, in features, out features) of every attention projection in the pipeline's UNet."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(pipeline_dir) / "unet")
    return [
        (name, module.in_features, module.out_features)
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear) and ".attentions." in name and (".attn1." in name or ".attn2." in name)
    ]


def build_tiny_lora(pipeline_dir: Path, dest_file: Path, *, seed: int = 0, rank: int = 4) -> Path:
    """Write a kohya-style LoRA (as ai-toolkit saves for SD 1.5) for the tiny UNet's attention layers.

    Keys look like lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight,
    with .lora_up.weight (non-zero, so the LoRA visibly changes the output) and .alpha.
    """
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, in_features, out_features in unet_lora_targets(pipeline_dir):
        key = "lora_unet_" + name.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = torch.randn(rank, in_features, generator=generator) * 0.5
        tensors[f"{key}.lora_up.weight"] = torch.randn(out_features, rank, generator=generator) * 0.5
        tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    dest_file = Path(dest_file)
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest_file), metadata={"ss_base_model_version": "sd_1.5", "format": "pt"})
    return dest_file
