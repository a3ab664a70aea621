"""Caption listing, editing and thumbnails on disk: paging, atomic writes, paths that never leave the dataset."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from core.errors import InvalidInput, NotFound, PathEscape
from core.storage.captions import CaptionStore
from core.storage.datasets import DatasetStore
from core.storage.workspace import Workspace


@pytest.fixture
def store(tmp_path: Path) -> CaptionStore:
    workspace = Workspace(tmp_path / "workspace").ensure()
    folder = workspace.training_data / "faces"
    (folder / "sub").mkdir(parents=True)
    (folder / "_latent_cache").mkdir()
    for rel in ("b.png", "a.png", "a.v2.jpg", "sub/c.webp", "_latent_cache/x.png", ".hidden.png"):
        Image.new("RGB", (40, 20), (200, 30, 30)).save(folder / rel)
    (folder / "a.txt").write_text("first caption\n")
    (folder / "notes.txt").write_text("not a caption of any image")
    (workspace.root / "secret.png").write_bytes((folder / "a.png").read_bytes())
    return CaptionStore(DatasetStore(workspace, max_file_bytes=10**6, max_upload_bytes=10**7, max_zip_entries=10))


def folder_of(store: CaptionStore) -> Path:
    return store.datasets.workspace.training_data / "faces"


def test_pages_list_every_image_with_its_caption_in_path_order(store: CaptionStore) -> None:
    first = store.page("faces", limit=2)
    assert first["total"] == 4 and first["captioned"] == 1
    assert [(e["image"], e["caption"]) for e in first["images"]] == [("a.png", "first caption"), ("a.v2.jpg", None)]
    assert first["next_cursor"] == "a.v2.jpg"
    second = store.page("faces", limit=2, cursor=first["next_cursor"])
    assert [e["image"] for e in second["images"]] == ["b.png", "sub/c.webp"]
    assert second["next_cursor"] is None
    assert all(e["has_caption"] is False and e["size"] > 0 for e in second["images"])


def test_a_page_after_a_removed_cursor_image_still_continues(store: CaptionStore) -> None:
    cursor = store.page("faces", limit=1)["next_cursor"]
    (folder_of(store) / "a.png").unlink()
    assert [e["image"] for e in store.page("faces", limit=2, cursor=cursor)["images"]] == ["a.v2.jpg", "b.png"]


def test_set_writes_the_caption_beside_the_image(store: CaptionStore) -> None:
    out = store.set("faces", "sub/c.webp", "a red square\n")
    assert out == {"image": "sub/c.webp", "caption": "a red square", "has_caption": True, "size": out["size"]}
    assert (folder_of(store) / "sub" / "c.txt").read_text() == "a red square\n"
    store.set("faces", "a.v2.jpg", "dotted")
    assert (folder_of(store) / "a.v2.txt").read_text() == "dotted\n"
    assert store.page("faces")["captioned"] == 3
    assert not [p for p in folder_of(store).rglob(".*") if p.name != ".hidden.png"]  # no temporary left


@pytest.mark.parametrize(
    ("image", "error", "field"),
    [
        ("../../secret.png", PathEscape, "image"),
        ("/etc/passwd.png", PathEscape, "image"),
        ("sub\\c.webp", PathEscape, "image"),
        ("missing.png", NotFound, "image"),
        (".hidden.png", NotFound, "image"),
        ("_latent_cache/x.png", NotFound, "image"),
        ("notes.txt", InvalidInput, "image"),
    ],
)
def test_only_images_of_the_dataset_are_reachable(
    store: CaptionStore, image: str, error: type[Exception], field: str
) -> None:
    before = sorted(p.relative_to(store.datasets.workspace.root) for p in store.datasets.workspace.root.rglob("*"))
    with pytest.raises(error) as caught:
        store.set("faces", image, "x")
    assert getattr(caught.value, "field", None) == field
    with pytest.raises(error):
        store.thumbnail("faces", image, 32)
    after = sorted(p.relative_to(store.datasets.workspace.root) for p in store.datasets.workspace.root.rglob("*"))
    assert after == before


def test_a_caption_over_the_limit_or_with_nul_is_refused_and_the_old_one_stays(store: CaptionStore) -> None:
    with pytest.raises(InvalidInput, match="4001 characters long; the limit is 4000"):
        store.set("faces", "a.png", "x" * 4001)
    with pytest.raises(InvalidInput, match="NUL"):
        store.set("faces", "a.png", "bad\x00text")
    assert (folder_of(store) / "a.txt").read_text() == "first caption\n"
    with pytest.raises(NotFound, match="dataset 'nobody' does not exist"):
        store.page("nobody")
    with pytest.raises(InvalidInput, match="limit"):
        store.page("faces", limit=0)


def test_thumbnails_fit_the_size_and_keep_the_aspect(store: CaptionStore) -> None:
    data = store.thumbnail("faces", "a.png", 16)
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (16, 8)
    with Image.open(io.BytesIO(store.thumbnail("faces", "a.png", 1024))) as thumb:
        assert thumb.size == (40, 20)  # never enlarged
    with pytest.raises(InvalidInput, match="size"):
        store.thumbnail("faces", "a.png", 4)


def test_a_broken_image_gets_a_clear_error_not_a_crash(store: CaptionStore) -> None:
    (folder_of(store) / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(InvalidInput, match=r"'broken\.png' could not be decoded for a preview"):
        store.thumbnail("faces", "broken.png", 32)
