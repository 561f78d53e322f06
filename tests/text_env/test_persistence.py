"""The persistence layer: manifests catch every kind of tampering, paths stay inside, writes are atomic, and
safetensors headers are checked before any data is read."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch

from text_env.persistence import (
    MANIFEST_NAME,
    IntegrityError,
    atomic_directory,
    check_tensor_shapes,
    nonfinite_tensors,
    read_safetensors,
    read_safetensors_header,
    resolve_inside,
    verify_manifest,
    write_safetensors,
)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    with atomic_directory(tmp_path / "saved", kind="policy", format_version=2) as d:
        write_safetensors(d / "model.safetensors", {"w": torch.arange(12.0).view(3, 4)})
        (d / "config.json").write_text('{"a": 1}')
        (d / "sub").mkdir()
        (d / "sub" / "x.json").write_text("[1, 2]")
    return tmp_path / "saved"


def test_round_trip_lists_every_file(saved: Path) -> None:
    m = verify_manifest(saved, kind="policy", max_format_version=2)
    assert sorted(m["files"]) == ["config.json", "model.safetensors", "sub/x.json"]
    assert m["format_version"] == 2


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "tamper, match",
    [
        (lambda d: _flip_last_byte(d / "model.safetensors"), "model.safetensors.*sha256"),
        (lambda d: (d / "sub" / "x.json").write_text("[1, 2, 3]"), "x.json.*bytes"),
        (lambda d: (d / "config.json").unlink(), "config.json.*missing"),
        (lambda d: (d / "extra.json").write_text("{}"), "does not list.*extra.json"),
        (lambda d: (d / MANIFEST_NAME).unlink(), "no manifest.json"),
        (lambda d: (d / MANIFEST_NAME).write_text("[]"), "malformed"),
    ],
)
def test_any_tampering_raises_naming_the_file(saved: Path, tamper, match) -> None:
    tamper(saved)
    with pytest.raises(IntegrityError, match=match):
        verify_manifest(saved)


def test_a_file_swapped_from_another_save_is_caught(tmp_path: Path, saved: Path) -> None:
    with atomic_directory(tmp_path / "other", kind="policy", format_version=2) as d:
        write_safetensors(d / "model.safetensors", {"w": torch.zeros(3, 4)})
        (d / "config.json").write_text('{"a": 1}')
        (d / "sub").mkdir()
        (d / "sub" / "x.json").write_text("[1, 2]")
    os.replace(tmp_path / "other" / "model.safetensors", saved / "model.safetensors")
    with pytest.raises(IntegrityError, match=r"model\.safetensors"):
        verify_manifest(saved)


def test_kind_and_future_version_are_checked(saved: Path) -> None:
    with pytest.raises(IntegrityError, match="holds a 'policy'"):
        verify_manifest(saved, kind="checkpoint")
    with pytest.raises(IntegrityError, match="format_version 2"):
        verify_manifest(saved, max_format_version=1)


def test_symlinks_inside_are_refused(saved: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text('{"a": 1}')
    (saved / "config.json").unlink()
    (saved / "config.json").symlink_to(outside)
    with pytest.raises(IntegrityError, match="symlink"):
        verify_manifest(saved)


def test_a_symlinked_directory_is_refused(saved: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(saved)
    with pytest.raises(IntegrityError, match="symlink"):
        verify_manifest(link)


@pytest.mark.parametrize("rel", ["/etc/passwd", "../x", "a/../../x", "", "~/x", 3, None, "a\x00b"])
def test_resolve_inside_refuses_paths_that_leave(tmp_path: Path, rel) -> None:
    with pytest.raises(ValueError, match="model_dir"):
        resolve_inside(tmp_path, rel, what="model_dir")


def test_resolve_inside_refuses_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "inner").symlink_to(tmp_path / "real")
    with pytest.raises(ValueError, match="symlink"):
        resolve_inside(tmp_path, "inner/file", what="model_dir")
    assert resolve_inside(tmp_path, "real/file") == tmp_path / "real" / "file"


def test_a_failed_write_leaves_nothing_and_keeps_the_old_directory(saved: Path) -> None:
    before = (saved / "config.json").read_text()
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(saved, "policy", 2) as d:
        (d / "config.json").write_text("{}")
        raise RuntimeError("boom")
    assert sorted(p.name for p in saved.parent.iterdir()) == ["saved"]
    assert (saved / "config.json").read_text() == before
    verify_manifest(saved)


def test_replace_false_refuses_an_existing_target(saved: Path) -> None:
    with pytest.raises(FileExistsError), atomic_directory(saved, "policy", 2, replace=False):
        pass


def test_debris_of_a_killed_writer_is_cleared(tmp_path: Path) -> None:
    (tmp_path / ".thing.partial-999").mkdir()
    with atomic_directory(tmp_path / "thing", "policy", 1) as d:
        (d / "a.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    "blob, match",
    [
        (b"\x01\x02", "truncated"),
        (struct.pack("<Q", 1 << 40) + b"{}", "header of"),
        (
            _safetensors_bytes({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),
            "fit",
        ),
        (
            _safetensors_bytes({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 16),
            "fit",
        ),
        (
            _safetensors_bytes({"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
            "malformed",
        ),
        (
            _safetensors_bytes({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
            "malformed",
        ),
        (struct.pack("<Q", 3) + b"\xff\xfe\xfd", "corrupt header"),
        (_safetensors_bytes([], b""), "not an object"),  # type: ignore[arg-type]
    ],
)
def test_bad_safetensors_headers_are_refused_before_reading_data(tmp_path: Path, blob, match) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=match):
        read_safetensors_header(path)
    with pytest.raises(ValueError, match=match):
        read_safetensors(path)


def test_shapes_are_checked_against_the_config(saved: Path) -> None:
    path = saved / "model.safetensors"
    header = read_safetensors_header(path)
    assert header == {"w": ("F32", (3, 4))}
    check_tensor_shapes(path, header, {"w": (3, 4)})
    with pytest.raises(ValueError, match=r"w has shape \(3, 4\).*needs \(4, 4\)"):
        read_safetensors(path, expected={"w": (4, 4)})
    with pytest.raises(ValueError, match="missing v"):
        read_safetensors(path, expected={"w": (3, 4), "v": (1,)})
    assert torch.equal(read_safetensors(path, expected={"w": (3, 4)})["w"], torch.arange(12.0).view(3, 4))


def test_nonfinite_tensors_are_named() -> None:
    t = {"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")]), "c": torch.tensor([float("inf")])}
    assert nonfinite_tensors(t) == ["b", "c"]
    assert nonfinite_tensors({"i": torch.arange(3)}) == []
