"""A tiny, randomly initialised BLIP captioning model saved locally (nothing downloaded).

Its captions are random words from a small vocabulary, but it runs the real transformers code path the
default model (Salesforce/blip-image-captioning-base) takes: processor, generate, decode.
"""

from __future__ import annotations

import shutil
from pathlib import Path

WORDS = ("a", "photo", "of", "cat", "dog", "red", "blue", "on", "the", "table", "person", "with", "hat", "garden")
_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")
_BUILT: list[Path] = []  # the first build of this process, copied for later calls


def _build(dest: Path) -> None:
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip import BlipImageProcessor

    dest.mkdir(parents=True, exist_ok=True)
    vocab = [*_SPECIAL, *WORDS]
    vocab_file = dest / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab_file), bos_token="[DEC]", model_max_length=64)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    torch.manual_seed(0)
    ids = {token: vocab.index(token) for token in _SPECIAL}
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 37,
            "max_position_embeddings": 64,
            "bos_token_id": ids["[DEC]"],
            "pad_token_id": ids["[PAD]"],
            "sep_token_id": ids["[SEP]"],
            "eos_token_id": ids["[SEP]"],
        },
        vision_config={
            "hidden_size": 32,
            "image_size": 32,
            "patch_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 37,
        },
        projection_dim=32,
    )
    BlipForConditionalGeneration(config).save_pretrained(dest)
    processor.save_pretrained(dest)


def build_tiny_captioner(dest: Path) -> Path:
    """Save a tiny random BLIP captioning model (transformers layout) to dest and return dest."""
    dest = Path(dest)
    if _BUILT and (_BUILT[0] / "config.json").is_file():
        shutil.copytree(_BUILT[0], dest, dirs_exist_ok=True)
        return dest
    _build(dest)
    _BUILT[:] = [dest]
    return dest


def make_images(folder: Path, n: int, captioned: tuple[int, ...] = ()) -> Path:
    """n small PNGs img_00.png, img_01.png, ...; those in captioned get the caption 'old caption <i>'."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n):
        Image.new("RGB", (24, 16), (12 * index % 256, 60, 90)).save(folder / f"img_{index:02d}.png")
        if index in captioned:
            (folder / f"img_{index:02d}.txt").write_text(f"old caption {index}\n")
    return folder
