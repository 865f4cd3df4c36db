"""Shared set-up for the deployment tests: one exported copy of the session's ``teacher_run``.

The copy hard-links the run's files (instant, no 45 MB copies) so that exporting never adds files to the shared
fixture directory; it is made once per session (module-level cache) and reused by every deployment test module.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

from PIL import Image

_CACHE: dict[Path, Path] = {}
RUN_FILES = ("model.json", "config.json", "best.safetensors", "final.safetensors", "calibration.json")


def link_run(src: Path, dst: Path, extra: tuple[str, ...] = ()) -> Path:
    """A run directory at ``dst`` whose files are hard links of ``src`` (copies across file systems)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (*RUN_FILES, *extra):
        s = src / name
        if s.is_dir():
            shutil.copytree(s, dst / name, copy_function=_link_or_copy, dirs_exist_ok=True)
        elif s.is_file():
            _link_or_copy(s, dst / name)
    return dst


def _link_or_copy(s: str | Path, d: str | Path) -> None:
    try:
        os.link(s, d)
    except OSError:
        shutil.copy2(s, d)


def exported_run(teacher_run: Path, tmp_root: Path) -> Path:
    """``teacher_run`` exported (fp32 fixed + dynamic + int8) with a fitted ladder, in a linked copy."""
    if teacher_run not in _CACHE:
        from stillroom.deploy.onnx_export import export_onnx
        from stillroom.deploy.run_ladder import fit_run_ladder

        run = link_run(teacher_run, tmp_root / "exported")
        # ONNX Runtime's quantizer: quick on this resnet18; NNCF's path has its own tests (test_int8.py)
        rep = export_onnx(run, int8=True, int8_method="ort", backend_timing=0.05)
        fit_run_ladder(run)
        if rep["int8_check"]["ok"]:  # what `stillroom export --int8` does: int8's own ladder and temperature
            fit_run_ladder(run, served="int8")
        _CACHE[teacher_run] = run
    return _CACHE[teacher_run]


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but carries almost no data: a decompression-bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def rgba_silhouette(size: int = 48, box: tuple[int, int, int, int] = (10, 8, 38, 40)) -> Image.Image:
    """A coloured square on a transparent background (alpha is the mask)."""
    img = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    img.paste((180, 40, 40, 255), box)
    return img


def ort_top1_by_split(export_dir: Path, report: dict) -> dict[str, tuple[int, float, float]]:
    """Recompute, from the files on disk and independently of the export code, each split's (n, fp32 top-1, int8
    top-1) in ONNX Runtime for the splits ``report["int8_check"]`` lists (ID rows only)."""
    import numpy as np

    from stillroom.data.dataset import load_images
    from stillroom.data.index import load_index
    from stillroom.deploy._ort import normalize_uint8, ort_logits, ort_session
    from stillroom.runs import split_rows

    index = load_index(report["index"])
    images = load_images(index)
    fp_sess = ort_session(export_dir / "model_dynamic.onnx")
    q_sess = ort_session(export_dir / "model_int8.onnx")
    out = {}
    for split in report["int8_check"]["splits"]:
        rows, _ = split_rows(index, split, None)
        x = normalize_uint8(np.asarray(images[rows]), report["input"]["mean"], report["input"]["std"])
        labels = index.labels[rows]
        acc = [float((ort_logits(s, x, 64).argmax(1) == labels).mean()) for s in (fp_sess, q_sess)]
        out[split] = (len(rows), acc[0], acc[1])
    return out


def write_tgz(path: Path, files: dict[str, object]) -> Path:
    """A gzipped tarball at ``path`` holding each ``files`` value as JSON under its name (fake npm packages)."""
    import json
    import tarfile

    with tarfile.open(path, "w:gz") as tf:
        for name, obj in files.items():
            data = json.dumps(obj).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
