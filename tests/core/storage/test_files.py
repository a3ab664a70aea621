"""Workspace browsing, path gates, chunked downloads with checksums, and zip bundles on disk."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidInput, NotFound, PathEscape
from core.storage import files
from core.storage.files import build_zip, bundle_key, list_files, max_raw_chunk, read_chunk, resolve_many
from core.storage.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A workspace with a few files of each kind."""
    workspace = Workspace(tmp_path / "ws").ensure()
    write(workspace.root / "training_data/cats/a.png", b"\x89PNG\r\n\x1a\n" + b"a" * 100)
    write(workspace.root / "training_data/cats/a.txt", b"a cat")
    write(workspace.root / "training_data/cats/sub/b.JPG", b"\xff\xd8\xff" + b"b" * 50)
    write(workspace.root / "output/train_0123456789ab/cat/cat.safetensors", os.urandom(3000))
    write(workspace.root / "output/train_0123456789ab/cat/config.yaml", b"job: extension\n")
    write(workspace.root / "output/train_0123456789ab/cat/.hidden.png", b"secret")
    write(workspace.root / "logs/train_0123456789ab.log", b"step 1\n")
    write(workspace.root / "lorapod.db", b"SQLite format 3\x00")
    write(workspace.root / "lorapod.db-wal", b"wal")
    write(workspace.root / "models/huggingface/models--org--x/blobs/abc", b"blob")
    return workspace


def write(path: Path, data: bytes) -> Path:
    """Create path with data, making its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----- listing


def test_list_whole_workspace_skips_hidden_db_and_hub_cache(ws: Workspace) -> None:
    listed = {f.path: f for f in list_files(ws)}
    assert set(listed) == {
        "training_data/cats/a.png",
        "training_data/cats/a.txt",
        "training_data/cats/sub/b.JPG",
        "output/train_0123456789ab/cat/cat.safetensors",
        "output/train_0123456789ab/cat/config.yaml",
        "logs/train_0123456789ab.log",
    }
    info = listed["output/train_0123456789ab/cat/cat.safetensors"]
    assert (info.size, info.kind) == (3000, "model")
    assert info.modified.endswith("Z")
    assert {listed[p].kind for p in listed if p.startswith("training_data")} == {"image", "caption"}
    assert listed["logs/train_0123456789ab.log"].kind == "log"
    assert listed["output/train_0123456789ab/cat/config.yaml"].kind == "config"


def test_list_one_directory_with_pattern(ws: Workspace) -> None:
    found = list_files(ws, "training_data/cats", "*.jpg")
    assert [f.path for f in found] == ["training_data/cats/sub/b.JPG"]
    found = list_files(ws, "/workspace/training_data", "a.*")
    assert [f.path for f in found] == ["training_data/cats/a.png", "training_data/cats/a.txt"]


def test_list_by_kind_and_limit(ws: Workspace) -> None:
    assert [f.kind for f in list_files(ws, kinds={"image"})] == ["image", "image"]
    assert len(list_files(ws, limit=2)) == 2


def test_list_hub_cache_when_asked_for_it(ws: Workspace) -> None:
    found = list_files(ws, "models/huggingface")
    assert [f.path for f in found] == ["models/huggingface/models--org--x/blobs/abc"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pattern": "a/*.png"}, "pattern"),
        ({"pattern": ""}, "pattern"),
        ({"kinds": {"weird"}}, "kinds"),
        ({"limit": 0}, "limit"),
    ],
)
def test_list_validates_arguments(ws: Workspace, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        list_files(ws, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_list_missing_directory_is_not_found(ws: Workspace) -> None:
    with pytest.raises(NotFound):
        list_files(ws, "nope")
    with pytest.raises(NotFound):
        list_files(ws, "training_data/cats/a.png")


ESCAPES = ["../", "../../etc", "/etc/passwd", "/workspace/../etc/passwd", "a\x00b", "%2e%2e%2f", "..%2fetc", "~/x"]


@pytest.mark.parametrize("path", ESCAPES)
def test_list_refuses_escapes(ws: Workspace, path: str) -> None:
    with pytest.raises(PathEscape):
        list_files(ws, path)


@pytest.mark.parametrize("path", ESCAPES)
def test_read_chunk_refuses_escapes(ws: Workspace, path: str) -> None:
    with pytest.raises(PathEscape) as caught:
        read_chunk(ws, path, max_length=100)
    assert caught.value.field == "file_path"


def test_symlink_out_of_the_workspace_is_refused_and_not_listed(ws: Workspace, tmp_path: Path) -> None:
    secret = write(tmp_path / "secret.txt", b"top secret")
    (ws.root / "output" / "link.txt").symlink_to(secret)
    (ws.root / "output" / "linkdir").symlink_to(tmp_path)
    with pytest.raises(PathEscape):
        read_chunk(ws, "output/link.txt", max_length=100)
    with pytest.raises(PathEscape):
        read_chunk(ws, "output/linkdir/secret.txt", max_length=100)
    assert all("link" not in f.path for f in list_files(ws))


def test_symlink_inside_the_workspace_is_served(ws: Workspace) -> None:
    (ws.root / "output" / "alias.txt").symlink_to(ws.root / "training_data/cats/a.txt")
    chunk = read_chunk(ws, "output/alias.txt", max_length=100)
    assert base64.b64decode(chunk.content_b64) == b"a cat"
    assert chunk.path == "training_data/cats/a.txt"


# ----- chunks


def reassemble(ws: Workspace, path: str, max_length: int) -> tuple[bytes, list[files.Chunk]]:
    """Follow next_offset from 0 to the end; return the bytes and the chunks."""
    chunks = [read_chunk(ws, path, max_length=max_length)]
    while not chunks[-1].done:
        assert chunks[-1].next_offset is not None
        chunks.append(read_chunk(ws, path, offset=chunks[-1].next_offset, max_length=max_length))
    return b"".join(base64.b64decode(c.content_b64) for c in chunks), chunks


@pytest.mark.parametrize("max_length", [1, 7, 999, 3000, 10_000])
def test_chunks_reassemble_byte_for_byte(ws: Workspace, max_length: int) -> None:
    path = ws.root / "output/train_0123456789ab/cat/cat.safetensors"
    data, chunks = reassemble(ws, "output/train_0123456789ab/cat/cat.safetensors", max_length)
    assert data == path.read_bytes()
    assert len(chunks) == -(-3000 // max_length)
    assert {c.sha256 for c in chunks} == {hashlib.sha256(path.read_bytes()).hexdigest()}
    assert chunks[-1].next_offset is None and chunks[-1].done
    assert all(not c.done for c in chunks[:-1])
    assert all(c.size == 3000 for c in chunks)


def test_length_is_clamped_to_max_length(ws: Workspace) -> None:
    chunk = read_chunk(ws, "output/train_0123456789ab/cat/cat.safetensors", offset=10, length=50, max_length=20)
    assert (chunk.offset, chunk.length, chunk.next_offset) == (10, 20, 30)
    chunk = read_chunk(ws, "output/train_0123456789ab/cat/cat.safetensors", offset=10, length=5, max_length=20)
    assert (chunk.length, chunk.next_offset) == (5, 15)


def test_offset_at_end_is_an_empty_final_chunk(ws: Workspace) -> None:
    chunk = read_chunk(ws, "training_data/cats/a.txt", offset=5, max_length=100)
    assert (chunk.length, chunk.content_b64, chunk.next_offset, chunk.done) == (0, "", None, True)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"offset": 6}, "offset"), ({"offset": -1}, "offset"), ({"length": 0}, "length"), ({"offset": True}, "offset")],
)
def test_bad_offsets_and_lengths(ws: Workspace, kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        read_chunk(ws, "training_data/cats/a.txt", max_length=100, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_missing_file_and_directory(ws: Workspace) -> None:
    with pytest.raises(NotFound):
        read_chunk(ws, "output/nothing.bin", max_length=10)
    with pytest.raises(InvalidInput):
        read_chunk(ws, "output", max_length=10)


def test_sha_is_cached_until_the_file_changes(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = files.hash_file

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(files, "hash_file", counting)
    monkeypatch.setattr(files, "_sha_cache", files._ShaCache())
    target = "output/train_0123456789ab/cat/cat.safetensors"
    _, chunks = reassemble(ws, target, 100)
    assert len(chunks) == 30
    assert len(calls) == 1
    path = ws.root / target
    path.write_bytes(b"changed")
    os.utime(path, ns=(1, 1))
    chunk = read_chunk(ws, target, max_length=100)
    assert len(calls) == 2
    assert chunk.sha256 == hashlib.sha256(b"changed").hexdigest()


def test_sha_cache_is_bounded(tmp_path: Path) -> None:
    cache = files._ShaCache(capacity=2)
    for i in range(3):
        path = write(tmp_path / f"f{i}", bytes([i]))
        assert cache.get(path, path.stat()) == hashlib.sha256(bytes([i])).hexdigest()
    assert len(cache._items) == 2


def test_chunk_to_dict_is_json_ready(ws: Workspace) -> None:
    data = json.loads(json.dumps(read_chunk(ws, "training_data/cats/a.txt", max_length=3).to_dict()))
    assert data["next_offset"] == 3
    assert data["done"] is False
    assert base64.b64decode(data["content_b64"]) == b"a c"


@pytest.mark.parametrize("limit", [10 * 1000**2, 20 * 1000**2])
def test_max_raw_chunk_for_runpod_limits(limit: int) -> None:
    raw = max_raw_chunk(limit)
    assert raw % 3 == 0
    assert 4 * raw // 3 + files.ENVELOPE_RESERVE <= limit
    assert 4 * (raw + 3) // 3 + files.ENVELOPE_RESERVE > limit  # the next multiple of 3 would not fit


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(min_value=files.ENVELOPE_RESERVE + 4, max_value=50 * 1000**2))
def test_max_raw_chunk_base64_fits_any_limit(limit: int) -> None:
    raw = max_raw_chunk(limit)
    encoded = len(base64.b64encode(b"\x00" * raw)) if raw < 100_000 else 4 * -(-raw // 3)
    assert encoded + files.ENVELOPE_RESERVE <= limit
    assert raw % 3 == 0 and raw > 0


def test_max_raw_chunk_refuses_a_limit_below_the_reserve() -> None:
    with pytest.raises(InvalidInput):
        max_raw_chunk(1000)


# ----- resolve_many and bundles


def test_resolve_many_from_paths_and_directory(ws: Workspace) -> None:
    got = resolve_many(ws, ["training_data/cats/a.txt", "/workspace/training_data/cats/a.txt"], "training_data/cats")
    assert [ws.relative(p) for p in got] == [
        "training_data/cats/a.txt",
        "training_data/cats/a.png",
        "training_data/cats/sub/b.JPG",
    ]


@pytest.mark.parametrize(
    ("file_paths", "directory", "error", "field"),
    [
        (None, None, InvalidInput, "file_paths"),
        (["training_data/cats/a.txt", "../x"], None, PathEscape, "file_paths[1]"),
        (["training_data/missing.png"], None, NotFound, "file_paths[0]"),
        (None, "/etc", PathEscape, "directory"),
        ("a.txt", None, InvalidInput, "file_paths"),
    ],
)
def test_resolve_many_refuses(
    ws: Workspace, file_paths: list[str] | None, directory: str | None, error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as caught:
        resolve_many(ws, file_paths, directory)
    assert caught.value.field == field  # type: ignore[attr-defined]


def test_resolve_many_empty_directory(ws: Workspace) -> None:
    (ws.root / "output" / "empty").mkdir()
    with pytest.raises(InvalidInput) as caught:
        resolve_many(ws, None, "output/empty")
    assert caught.value.field == "directory"


def test_build_zip_round_trip_and_reuse(ws: Workspace) -> None:
    paths = resolve_many(ws, None, "output/train_0123456789ab")
    paths += resolve_many(ws, ["training_data/cats/a.txt"], None)
    key = bundle_key(paths)
    bundle = build_zip(ws, paths, bundle_name=f"job-{key}")
    assert bundle == ws.output / "bundles" / f"job-{key}.zip"
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        assert sorted(names) == [
            "output/train_0123456789ab/cat/cat.safetensors",
            "output/train_0123456789ab/cat/config.yaml",
            "training_data/cats/a.txt",
        ]
        for name in names:
            assert archive.read(name) == (ws.root / name).read_bytes()
        methods = {info.filename: info.compress_type for info in archive.infolist()}
    assert methods["output/train_0123456789ab/cat/cat.safetensors"] == zipfile.ZIP_STORED
    assert methods["output/train_0123456789ab/cat/config.yaml"] == zipfile.ZIP_DEFLATED
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]

    before = bundle.stat().st_mtime_ns
    os.utime(bundle, ns=(before - 10**9, before - 10**9))
    assert build_zip(ws, paths, bundle_name=f"job-{key}") == bundle
    assert bundle.stat().st_mtime_ns == before - 10**9  # reused, not rewritten

    config = ws.root / "output/train_0123456789ab/cat/config.yaml"
    config.write_bytes(b"job: extension\nconfig: {}\n")
    assert bundle_key(paths) != key
    rebuilt = build_zip(ws, paths, bundle_name=f"job-{key}")  # same name, changed input: rebuilt
    with zipfile.ZipFile(rebuilt) as archive:
        assert archive.read("output/train_0123456789ab/cat/config.yaml") == config.read_bytes()


def test_bundle_is_served_in_chunks(ws: Workspace) -> None:
    paths = resolve_many(ws, None, "training_data")
    bundle = build_zip(ws, paths, bundle_name="data")
    data, _ = reassemble(ws, ws.relative(bundle), 256)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("training_data/cats/a.txt") == b"a cat"


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden"])
def test_build_zip_refuses_bad_names(ws: Workspace, name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        build_zip(ws, [ws.root / "training_data/cats/a.txt"], bundle_name=name)
    assert caught.value.field == "bundle_name"


def test_build_zip_refuses_paths_outside(ws: Workspace, tmp_path: Path) -> None:
    outside = write(tmp_path / "outside.txt", b"x")
    with pytest.raises(PathEscape):
        build_zip(ws, [outside], bundle_name="x")
    assert not (ws.output / "bundles" / "x.zip").exists()


def test_read_chunk_never_serves_the_database_or_hidden_files(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws").ensure()
    (ws.root / "lorapod.db").write_bytes(b"SQLite format 3\x00")
    (ws.root / "lorapod.db-wal").write_bytes(b"wal")
    (ws.output / ".staging").mkdir()
    (ws.output / ".staging" / "x.png").write_bytes(b"x")
    for path in ("lorapod.db", "/workspace/lorapod.db", "lorapod.db-wal", "output/.staging/x.png"):
        with pytest.raises(NotFound):
            read_chunk(ws, path, max_length=1024)
