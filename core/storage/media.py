"""Which files are training images and captions: the one suffix list, and image types told by their bytes."""

from __future__ import annotations

# The image formats ai-toolkit trains on; generated images and samples use the same ones.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
CAPTION_SUFFIXES = frozenset({".txt", ".caption"})


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the training image suffixes (case-insensitive)."""
    return any(name.lower().endswith(suffix) for suffix in IMAGE_SUFFIXES)


def detect_image_type(head: bytes) -> str | None:
    """The image type the first bytes of a file announce: png, jpeg, webp, gif, bmp, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    # "BM" alone is common in text; a real BMP header also has four reserved zero bytes at 6..10.
    if len(head) >= 14 and head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":
        return "bmp"
    return None
