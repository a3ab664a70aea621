"""Dataset uploads: content-based validation, safe names, safe zips, limits, listing and deletion."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import core.storage.uploads as uploads
from core.errors import InvalidInput, NotFound, PathEscape, TooLarge
from core.storage.datasets import DatasetStore
from core.storage.media import detect_image_type
from core.storage.uploads import SKIPPED_FILE, safe_basename
from core.storage.workspace import Workspace


def image_bytes(fmt: str, size: tuple[int, int] = (8, 8), color: str = "red") -> bytes:
    """Real image bytes in PIL format fmt (PNG, JPEG, WEBP, GIF, BMP)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


PNG, JPEG, WEBP = image_bytes("PNG"), image_bytes("JPEG"), image_bytes("WEBP")


def zip_bytes(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip holding the given name -> bytes entries (names written verbatim, even unsafe ones)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    """Base64 text of data."""
    return base64.b64encode(data).decode()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A fresh workspace."""
    return Workspace(tmp_path / "ws").ensure()


@pytest.fixture
def store(ws: Workspace) -> DatasetStore:
    """A store with small limits, so limits are reachable in tests."""
    return DatasetStore(ws, max_file_bytes=200_000, max_upload_bytes=1_000_000, max_zip_entries=20)


def all_files(root: Path) -> list[str]:
    """Every file under root, hidden ones included, relative POSIX paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def dataset_dir(ws: Workspace, name: str = "cats") -> Path:
    """The folder of a dataset."""
    return ws.training_data / name


# ----- content detection and names


@pytest.mark.parametrize(
    ("fmt", "expected"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp")]
)
def test_detect_image_type_by_magic(fmt: str, expected: str) -> None:
    assert detect_image_type(image_bytes(fmt)[:32]) == expected


@pytest.mark.parametrize("head", [b"", b"hello world", b"BM is a nice caption", b"RIFF1234WAVEfmt ", b"PK\x03\x04"])
def test_detect_image_type_rejects_non_images(head: bytes) -> None:
    assert detect_image_type(head) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a.png", "a.png"),
        ("../../x.png", "x.png"),
        ("/etc/x.png", "x.png"),
        ("C:\\Users\\me\\x.png", "x.png"),
        (".hidden.png", None),
        ("..", None),
        ("dir/", None),
        ("a\x00.png", None),
        ("a\nb.png", None),
    ],
)
def test_safe_basename(given: str, expected: str | None) -> None:
    assert safe_basename(given) == expected


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-dash", "x" * 65, "sp ace"])
def test_bad_dataset_names_are_refused(store: DatasetStore, name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.save_files(name, [("a.png", io.BytesIO(PNG))])
    assert caught.value.field == "training_name"


# ----- single files


def test_images_and_captions_saved_and_counted(store: DatasetStore, ws: Workspace) -> None:
    summary = store.save_files(
        "cats",
        [
            ("img1.png", io.BytesIO(PNG)),
            ("img1.txt", io.BytesIO(b"a red cat")),
            ("img2.jpg", io.BytesIO(JPEG)),
            ("img2.txt", io.BytesIO("zażółć gęślą jaźń".encode())),
            ("img3.webp", io.BytesIO(WEBP)),
        ],
    )
    assert sorted(summary.saved) == ["img1.png", "img1.txt", "img2.jpg", "img2.txt", "img3.webp"]
    assert summary.skipped == []
    assert (summary.images, summary.captions) == (3, 2)
    assert summary.images_without_caption == ["img3.webp"]
    folder = dataset_dir(ws)
    assert (folder / "img1.png").read_bytes() == PNG
    assert (folder / "img2.txt").read_text(encoding="utf-8") == "zażółć gęślą jaźń"
    assert not list(folder.glob(".lorapod-staging-*"))


def test_counts_cover_the_whole_dataset_across_uploads(store: DatasetStore) -> None:
    store.save_files("cats", [("a.png", io.BytesIO(PNG))])
    summary = store.save_files("cats", [("a.txt", io.BytesIO(b"caption")), ("b.jpg", io.BytesIO(JPEG))])
    assert sorted(summary.saved) == ["a.txt", "b.jpg"]
    assert (summary.images, summary.captions) == (2, 1)
    assert summary.images_without_caption == ["b.jpg"]


def test_png_name_with_jpeg_content_is_renamed(store: DatasetStore, ws: Workspace) -> None:
    summary = store.save_files("cats", [("photo.png", io.BytesIO(JPEG))])
    assert summary.saved == ["photo.jpg"]
    assert summary.renamed == [{"from": "photo.png", "to": "photo.jpg", "reason": "content is JPEG"}]
    assert (dataset_dir(ws) / "photo.jpg").read_bytes() == JPEG
    assert not (dataset_dir(ws) / "photo.png").exists()


def test_png_named_txt_is_an_image(store: DatasetStore, ws: Workspace) -> None:
    summary = store.save_files("cats", [("notes.txt", io.BytesIO(PNG))])
    assert summary.saved == ["notes.png"]
    assert (summary.images, summary.captions) == (1, 0)
    assert (dataset_dir(ws) / "notes.png").read_bytes() == PNG


def test_caption_extension_is_stored_as_txt(store: DatasetStore, ws: Workspace) -> None:
    summary = store.save_files("cats", [("a.png", io.BytesIO(PNG)), ("a.caption", io.BytesIO(b"cat"))])
    assert sorted(summary.saved) == ["a.png", "a.txt"]
    assert summary.images_without_caption == []
    assert (dataset_dir(ws) / "a.txt").read_bytes() == b"cat"


@pytest.mark.parametrize(
    ("filename", "content", "reason"),
    [
        ("fake.png", b"just some text, not pixels", "not an image: content is not PNG, JPEG or WebP"),
        ("bad.txt", b"\xff\xfe\x00caption", "caption is not UTF-8 text"),
        ("anim.gif", image_bytes("GIF"), "GIF is not a format ai-toolkit trains on"),
        ("pic.bmp", image_bytes("BMP"), "BMP is not a format ai-toolkit trains on"),
        ("tool.exe", b"MZ\x90\x00", "unsupported file"),
        (".env", b"SECRET=1", "hidden"),
    ],
)
def test_unusable_files_are_skipped_with_a_reason(
    store: DatasetStore, ws: Workspace, filename: str, content: bytes, reason: str
) -> None:
    summary = store.save_files("cats", [(filename, io.BytesIO(content)), ("ok.png", io.BytesIO(PNG))])
    assert summary.saved == ["ok.png"]
    assert len(summary.skipped) == 1
    assert summary.skipped[0]["filename"] == filename
    assert reason in summary.skipped[0]["reason"]
    assert [f for f in all_files(dataset_dir(ws)) if not f.startswith(".lorapod")] == ["ok.png"]


@pytest.mark.parametrize("filename", ["../../x.png", "/etc/x.png", "sub/../../../x.png", "..\\..\\x.png"])
def test_directories_in_file_names_are_dropped(store: DatasetStore, ws: Workspace, filename: str) -> None:
    summary = store.save_files("cats", [(filename, io.BytesIO(PNG))])
    assert summary.saved == ["x.png"]
    assert (dataset_dir(ws) / "x.png").read_bytes() == PNG
    outside = [p for p in ws.root.parent.rglob("x.png") if p != dataset_dir(ws) / "x.png"]
    assert outside == []


def test_save_stream_returns_one_file_result(store: DatasetStore, ws: Workspace) -> None:
    result = store.save_stream("cats", "one.jpeg", io.BytesIO(JPEG))
    assert result.filename == "one.jpeg"
    assert result.saved == ["one.jpeg"]
    assert (dataset_dir(ws) / "one.jpeg").read_bytes() == JPEG


def test_file_over_per_file_limit_is_skipped_without_leftovers(store: DatasetStore, ws: Workspace) -> None:
    big = PNG + b"\x00" * 250_000
    summary = store.save_files("cats", [("big.png", io.BytesIO(big)), ("ok.png", io.BytesIO(PNG))])
    assert summary.saved == ["ok.png"]
    assert summary.skipped[0]["filename"] == "big.png"
    assert "per-file limit of 200000 bytes" in summary.skipped[0]["reason"]
    assert [f for f in all_files(dataset_dir(ws)) if f != SKIPPED_FILE] == ["ok.png"]


def test_request_over_total_limit_keeps_nothing(store: DatasetStore, ws: Workspace) -> None:
    store.save_files("cats", [("keep.png", io.BytesIO(PNG))])
    chunk = PNG + b"\x00" * 150_000
    files = [(f"f{i}.png", io.BytesIO(chunk)) for i in range(8)]  # 8 x 150 KB > 1 MB
    with pytest.raises(TooLarge):
        store.save_files("cats", files)
    assert all_files(dataset_dir(ws)) == ["keep.png"]


def test_stream_that_fails_midway_leaves_no_half_file(store: DatasetStore, ws: Workspace) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise ConnectionError("client went away")
            return PNG

    with pytest.raises(ConnectionError):
        store.save_files("cats", [("a.png", io.BytesIO(PNG)), ("b.png", Broken())])  # type: ignore[list-item]
    assert all_files(dataset_dir(ws)) == []


# ----- base64


def test_base64_upload(store: DatasetStore, ws: Workspace) -> None:
    summary = store.save_base64(
        "cats",
        [
            {"filename": "a.png", "content": b64(PNG), "content_type": "image/png"},
            {"filename": "a.txt", "content": b64(b"a cat"), "content_type": "text/plain"},
            {"filename": "b.png", "content": "not base64!!", "content_type": "image/png"},
            {"filename": "c.jpg", "content": "data:image/jpeg;base64," + b64(JPEG)},
        ],
    )
    assert sorted(summary.saved) == ["a.png", "a.txt", "c.jpg"]
    assert summary.skipped == [{"filename": "b.png", "reason": "content is not valid base64"}]
    assert (dataset_dir(ws) / "c.jpg").read_bytes() == JPEG


def test_base64_content_type_does_not_decide(store: DatasetStore) -> None:
    summary = store.save_base64("cats", [{"filename": "x.png", "content": b64(b"hello"), "content_type": "image/png"}])
    assert summary.saved == []
    assert "not an image" in summary.skipped[0]["reason"]


@pytest.mark.parametrize(
    ("files", "field"),
    [
        ([{"filename": "a.png"}], "files[0].content"),
        ([{"filename": "a.png", "content": b64(PNG)}, {"content": b64(PNG)}], "files[1].filename"),
        ([{"filename": "a.png", "content": ""}], "files[0].content"),
        (["a.png"], "files[0]"),
        ([], "files"),
    ],
)
def test_base64_missing_fields_write_nothing(
    store: DatasetStore, ws: Workspace, files: list[dict[str, str]], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.save_base64("cats", files)
    assert caught.value.field == field
    assert not dataset_dir(ws).exists() or all_files(dataset_dir(ws)) == []


# ----- zips


def test_zip_with_subfolder_is_unpacked(store: DatasetStore, ws: Workspace) -> None:
    archive = zip_bytes(
        {
            "set/": b"",
            "set/one.png": PNG,
            "set/one.txt": b"first",
            "set/deep/two.jpg": JPEG,
            "__MACOSX/set/._one.png": b"apple double",
            "set/._one.png": b"apple double",
            "set/.DS_Store": b"finder",
        }
    )
    summary = store.save_files("cats", [("data.zip", io.BytesIO(archive))])
    assert sorted(summary.saved) == ["set/deep/two.jpg", "set/one.png", "set/one.txt"]
    assert summary.skipped == []
    assert (summary.images, summary.captions) == (2, 1)
    assert summary.images_without_caption == ["set/deep/two.jpg"]
    assert (dataset_dir(ws) / "set/deep/two.jpg").read_bytes() == JPEG
    assert not (dataset_dir(ws) / "__MACOSX").exists()


def test_zip_members_are_classified_like_files(store: DatasetStore) -> None:
    archive = zip_bytes({"a.png": JPEG, "b.png": b"text", "inner.zip": zip_bytes({"x.png": PNG})})
    summary = store.save_files("cats", [("data.zip", io.BytesIO(archive))])
    assert summary.saved == ["a.jpg"]
    assert summary.renamed[0]["to"] == "a.jpg"
    reasons = {s["filename"]: s["reason"] for s in summary.skipped}
    assert "not an image" in reasons["b.png"]
    assert "nested archives" in reasons["inner.zip"]


@pytest.mark.parametrize("evil", ["../evil.png", "/abs.png", "ok/../../evil.png", "C:/evil.png", "..\\evil.png"])
def test_zip_slip_is_refused_and_nothing_written(store: DatasetStore, ws: Workspace, evil: str) -> None:
    archive = zip_bytes({"good.png": PNG, evil: PNG})
    summary = store.save_files("cats", [("data.zip", io.BytesIO(archive))])
    assert summary.saved == []
    assert evil in summary.skipped[0]["reason"]
    assert "nothing unpacked" in summary.skipped[0]["reason"]
    assert all_files(dataset_dir(ws)) == [SKIPPED_FILE]
    assert not (ws.training_data / "evil.png").exists()
    assert not list(ws.root.parent.rglob("evil.png")) and not list(ws.root.parent.rglob("abs.png"))


def test_zip_symlink_entry_is_refused(store: DatasetStore, ws: Workspace) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("good.png", PNG)
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    summary = store.save_files("cats", [("data.zip", io.BytesIO(buffer.getvalue()))])
    assert summary.saved == []
    assert "'link.png' is a symbolic link" in summary.skipped[0]["reason"]
    assert all_files(dataset_dir(ws)) == [SKIPPED_FILE]


def test_zip_symlinked_subfolder_in_dataset_is_not_followed(store: DatasetStore, ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = dataset_dir(ws)
    folder.mkdir(parents=True)
    (folder / "sub").symlink_to(outside)
    summary = store.save_files("cats", [("data.zip", io.BytesIO(zip_bytes({"sub/x.png": PNG})))])
    assert summary.saved == []
    assert "outside the dataset" in summary.skipped[0]["reason"]
    assert list(outside.iterdir()) == []


def test_zip_with_too_many_entries_is_refused(store: DatasetStore, ws: Workspace) -> None:
    archive = zip_bytes({f"img{i}.png": PNG for i in range(21)})
    summary = store.save_files("cats", [("many.zip", io.BytesIO(archive))])
    assert summary.saved == []
    assert "21 entries, more than the limit of 20" in summary.skipped[0]["reason"]
    assert all_files(dataset_dir(ws)) == [SKIPPED_FILE]


def test_zip_declaring_more_than_the_limit_is_refused_before_extracting(
    store: DatasetStore, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 6 x 190 KB of zeros: each entry is under the per-file limit, the total is over 1 MB, the zip is tiny.
    archive = zip_bytes({f"z{i}.png": PNG + bytes(190_000) for i in range(6)})
    assert len(archive) < 50_000

    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("an entry was opened before the archive was checked")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_extraction)
    summary = store.save_files("cats", [("bomb.zip", io.BytesIO(archive))])
    assert summary.saved == []
    assert "unpacks to more than the limit" in summary.skipped[0]["reason"]
    assert all_files(dataset_dir(ws)) == [SKIPPED_FILE]


def test_zip_bomb_with_lying_header_is_refused_with_no_files(store: DatasetStore, ws: Workspace) -> None:
    payload = PNG + bytes(900_000)
    archive = bytearray(zip_bytes({"a.png": PNG, "b.png": payload}))
    real = len(payload).to_bytes(4, "little")
    fake = (100).to_bytes(4, "little")
    # Patch the uncompressed size in both the local header and the central directory entry.
    assert archive.count(real) == 2
    archive[:] = archive.replace(real, fake)
    summary = store.save_files("cats", [("bomb.zip", io.BytesIO(bytes(archive)))])
    assert summary.saved == []
    assert summary.skipped[0]["filename"] == "bomb.zip"
    assert "b.png" in summary.skipped[0]["reason"]
    assert all_files(dataset_dir(ws)) == [SKIPPED_FILE]


def test_zip_entry_over_per_file_limit_is_skipped_alone(store: DatasetStore) -> None:
    archive = zip_bytes({"ok.png": PNG, "big.png": PNG + bytes(250_000)})
    summary = store.save_files("cats", [("data.zip", io.BytesIO(archive))])
    assert summary.saved == ["ok.png"]
    assert summary.skipped == [{"filename": "big.png", "reason": "larger than the per-file limit of 200000 bytes"}]


def test_zip_entry_with_unusable_name_is_skipped_alone(store: DatasetStore) -> None:
    long_name = "x" * 300 + ".png"
    summary = store.save_files("cats", [("data.zip", io.BytesIO(zip_bytes({"ok.png": PNG, long_name: PNG})))])
    assert summary.saved == ["ok.png"]
    assert summary.skipped[0]["filename"] == long_name
    assert "not allowed" in summary.skipped[0]["reason"]


def test_same_name_twice_in_one_request_keeps_the_last(store: DatasetStore, ws: Workspace) -> None:
    summary = store.save_files("cats", [("a.png", io.BytesIO(PNG)), ("a.png", io.BytesIO(image_bytes("PNG", (4, 4))))])
    assert summary.saved == ["a.png"]
    assert (dataset_dir(ws) / "a.png").read_bytes() == image_bytes("PNG", (4, 4))
    assert all_files(dataset_dir(ws)) == ["a.png"]


def test_corrupt_zip_is_skipped(store: DatasetStore) -> None:
    summary = store.save_files("cats", [("broken.zip", io.BytesIO(b"PK\x03\x04" + b"\x00" * 100))])
    assert summary.saved == []
    assert "archive is corrupt" in summary.skipped[0]["reason"]


# ----- reading, skipped record, deleting


def test_get_reports_files_pairs_and_persisted_skips(store: DatasetStore, ws: Workspace) -> None:
    store.save_files(
        "cats",
        [
            ("a.png", io.BytesIO(PNG)),
            ("b.jpg", io.BytesIO(JPEG)),
            ("b.txt", io.BytesIO(b"b")),
            ("orphan.txt", io.BytesIO(b"o")),
            ("fake.png", io.BytesIO(b"text")),
        ],
    )
    info = store.get("cats")
    assert (info.images, info.captions) == (2, 2)
    assert info.images_without_caption == ["a.png"]
    assert info.captions_without_image == ["orphan.txt"]
    assert {f["path"] for f in info.files} == {"a.png", "b.jpg", "b.txt", "orphan.txt"}
    assert info.size_bytes == sum((dataset_dir(ws) / f["path"]).stat().st_size for f in info.files)
    assert [s["filename"] for s in info.skipped] == ["fake.png"]
    assert json.loads((dataset_dir(ws) / SKIPPED_FILE).read_text())[0]["filename"] == "fake.png"
    assert info.modified.endswith("Z")
    # A later good upload of the same name clears its old skip.
    store.save_files("cats", [("fake.png", io.BytesIO(PNG))])
    assert store.get("cats").skipped == []


def test_get_ignores_hidden_files_and_toolkit_caches(store: DatasetStore, ws: Workspace) -> None:
    store.save_files("cats", [("a.png", io.BytesIO(PNG))])
    folder = dataset_dir(ws)
    (folder / ".aitk_size.json").write_text("{}")
    (folder / "_latent_cache").mkdir()
    (folder / "_latent_cache" / "a_123.safetensors").write_bytes(b"x" * 10)
    info = store.get("cats")
    assert [f["path"] for f in info.files] == ["a.png"]


def test_list_get_and_delete(store: DatasetStore, ws: Workspace) -> None:
    store.save_files("dogs", [("d.png", io.BytesIO(PNG))])
    store.save_files("cats", [("c.png", io.BytesIO(PNG)), ("c.txt", io.BytesIO(b"c"))])
    assert [d.name for d in store.list()] == ["cats", "dogs"]
    store.delete_file("cats", "c.txt")
    assert store.get("cats").captions == 0
    with pytest.raises(NotFound):
        store.delete_file("cats", "c.txt")
    store.delete("dogs")
    assert [d.name for d in store.list()] == ["cats"]
    with pytest.raises(NotFound):
        store.get("dogs")
    with pytest.raises(NotFound):
        store.delete("dogs")


@pytest.mark.parametrize("relpath", ["../dogs/d.png", "/etc/passwd", "a\x00b", "", "."])
def test_delete_file_stays_inside_the_dataset(store: DatasetStore, ws: Workspace, relpath: str) -> None:
    store.save_files("dogs", [("d.png", io.BytesIO(PNG))])
    store.save_files("cats", [("c.png", io.BytesIO(PNG))])
    with pytest.raises(PathEscape):
        store.delete_file("cats", relpath)
    assert (dataset_dir(ws, "dogs") / "d.png").exists()
    assert (dataset_dir(ws) / "c.png").exists()


def test_summary_to_dict_is_json_ready(store: DatasetStore) -> None:
    summary = store.save_files("cats", [("a.png", io.BytesIO(PNG))])
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["dataset"] == "cats"
    assert data["saved"] == ["a.png"]
    assert data["images_without_caption"] == ["a.png"]


def test_every_published_file_is_on_disk_before_any_is_renamed_into_place(
    store: DatasetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    fsync, replace = uploads._fsync, os.replace

    def recording_fsync(path: Path) -> None:
        fsync(path)
        events.append(("fsync", str(path)))

    def recording_replace(source: str | Path, target: str | Path) -> None:
        events.append(("replace", str(source)))
        replace(source, target)

    monkeypatch.setattr(uploads, "_fsync", recording_fsync)
    monkeypatch.setattr(uploads.os, "replace", recording_replace)
    archive = zip_bytes({"set/x.png": PNG, "set/x.txt": b"caption"})
    files = [("a.png", io.BytesIO(PNG)), ("a.png", io.BytesIO(JPEG)), ("bundle.zip", io.BytesIO(archive))]
    summary = store.save_files("synced", files)
    assert sorted(summary.saved) == ["a.jpg", "a.png", "set/x.png", "set/x.txt"]
    renamed = [path for kind, path in events if kind == "replace"]
    assert len(renamed) == 4
    first_rename = events.index(("replace", renamed[0]))
    synced_before = {path for kind, path in events[:first_rename] if kind == "fsync"}
    assert set(renamed) <= synced_before
