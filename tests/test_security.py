"""Security: nothing unpickles (weights are safetensors, arrays are opened without pickle), configs cannot build
Python objects, uploads are capped in bytes and pixels, request data never names a file, loopback by default."""

from __future__ import annotations

import inspect
import io
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from stillroom._io import StillroomError

SRC = Path(__file__).resolve().parents[1] / "src" / "stillroom"


class _Payload:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickles(marker: Path) -> dict[str, bytes]:
    """The same payload as a plain pickle, a torch.save zip and a .npy object array."""
    buf = io.BytesIO()
    torch.save({"conv.weight": _Payload(marker)}, buf)
    npy = io.BytesIO()
    np.save(npy, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    return {
        "pickle": pickle.dumps({"conv.weight": _Payload(marker)}),
        "torch.save": buf.getvalue(),
        "npy object array": npy.getvalue(),
    }


def test_sources_never_unpickle():
    """Static guard: every loader in the package is pickle-free by construction."""
    bad = []
    for path in SRC.rglob("*.py"):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            hits = (
                ("torch.load(" in code and "weights_only=True" not in code)
                or re.search(r"\bpickle\.loads?\(|\bdill\.|\bjoblib\.load\(|allow_pickle=True", code)
                or re.search(r"yaml\.(load|unsafe_load|full_load)\(", code)
                or (re.search(r"\bnp\.load\(", code) and "allow_pickle=False" not in code)
            )
            if hits:
                bad.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not bad, "unsafe deserialisation:\n" + "\n".join(bad)


def test_torch_load_weights_only_refuses_the_payload(tmp_path):
    # Should a torch.load ever become unavoidable, weights_only=True is the rule; it refuses this payload.
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(_pickles(marker)["torch.save"])
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save", "npy object array"])
def test_malicious_weights_are_refused_everywhere(kind, teacher_run, tmp_path):
    from stillroom.models.factory import create_model
    from stillroom.runs import load_run, load_weights
    from stillroom.train.checkpoint import load_training_state

    marker = tmp_path / "pwned"
    evil = _pickles(marker)[kind]
    model = create_model("timm:resnet10t", 1, 4, 32)
    for name in ("evil.pt", "evil.safetensors"):
        (tmp_path / name).write_bytes(evil)
        with pytest.raises(StillroomError, match="not a valid safetensors"):
            load_weights(model, tmp_path / name)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(StillroomError, match="not a resumable training state"):
        load_training_state(tmp_path / "evil.pt", model, opt)
    # A run directory whose weights were swapped for a pickle.
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(teacher_run / "model.json", run / "model.json")
    for weights in ("best", "final"):
        (run / f"{weights}.safetensors").write_bytes(evil)
        with pytest.raises(StillroomError, match="not a valid safetensors"):
            load_run(run, weights)
    assert not marker.exists()


def test_malicious_arrays_are_refused(teacher_run, shapes_index, tmp_path):
    """Soft-label stores and the decoded-image cache are .npy files: an object array (pickle inside) is refused."""
    from stillroom.data.dataset import load_images
    from stillroom.data.index import load_index
    from stillroom.softlabels.export import export_softlabels
    from stillroom.softlabels.store import LOGITS, SoftLabelStore

    marker = tmp_path / "pwned"
    evil = _pickles(marker)["npy object array"]
    store = export_softlabels(teacher_run, shapes_index.root, tmp_path / "store").path
    (store / LOGITS).write_bytes(evil)
    with pytest.raises(StillroomError, match="not a readable .npy array of numbers"):
        SoftLabelStore.open(store)
    # The image cache of a copy of the dataset (the session's index stays untouched).
    ds = tmp_path / "ds"
    shutil.copytree(shapes_index.root, ds, ignore=shutil.ignore_patterns(".cache"))
    index = load_index(ds)
    cache = ds / ".cache" / f"images-{index.content_hash[:16]}.npy"
    cache.parent.mkdir()
    cache.write_bytes(evil)
    try:
        arr = load_images(index)  # refused: either an error or a rebuild from the PNGs
    except (StillroomError, ValueError):
        pass
    else:
        assert arr.dtype == np.uint8
    assert not marker.exists()


def test_yaml_config_cannot_run_code(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stillroom.cli import app
    from stillroom.config import load_config, read_yaml_mapping

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'name: x\nmodel: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(StillroomError, match=r"bad.yaml: not valid YAML .*python/object/apply:os.system"):
        load_config(bad)
    with pytest.raises(StillroomError, match="not valid YAML"):
        read_yaml_mapping(bad, "sweep file")
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: x\ndata: {index: somewhere}\nmodel: {name: resnet18}\n")
    with pytest.raises(StillroomError, match=r"--set .*not a valid YAML value"):
        load_config(ok, [f'name=!!python/object/apply:os.system ["touch {marker}"]'])
    res = CliRunner().invoke(app, ["train", str(bad)])
    assert isinstance(res.exception, StillroomError) and "not valid YAML" in str(res.exception)
    assert not marker.exists()


# --- the service --------------------------------------------------------------------------------------------------

MAX_BYTES, MAX_PIXELS = 32 * 1024, 256 * 256


@pytest.fixture(scope="module")
def served_run(teacher_run, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("fastapi")
    from _deploy import exported_run

    return exported_run(teacher_run, tmp_path_factory.mktemp("deploy"))


@pytest.fixture()
def client(served_run, tmp_path):
    from fastapi.testclient import TestClient

    from stillroom.deploy.service import create_app

    app = create_app(served_run, db_path=tmp_path / "t.sqlite", max_upload_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    with TestClient(app) as c:
        c.db = tmp_path / "t.sqlite"
        yield c


def test_upload_caps(client):
    from PIL import Image

    from _deploy import png_bytes, png_header_only, rgba_silhouette

    # Over the byte cap: refused on the declared length (413) and never read into memory.
    big = png_bytes(Image.effect_noise((256, 256), 64).convert("L"))
    assert len(big) > MAX_BYTES
    r = client.post("/predict", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413, r.text
    # Over the pixel cap but tiny in bytes (a decompression-bomb shape): 413 from the header, nothing decoded.
    r = client.post("/predict", files={"file": ("wide.png", png_header_only(1024, 1024), "image/png")})
    assert r.status_code == 413 and "pixels; the limit" in r.json()["detail"]
    r = client.post("/predict", files={"file": ("bomb.png", png_header_only(60000, 60000), "image/png")})
    assert r.status_code == 413
    # A small real image still works.
    r = client.post("/predict", files={"file": ("ok.png", png_bytes(rgba_silhouette()), "image/png")})
    assert r.status_code == 200, r.text


def test_request_paths_never_reach_the_filesystem(client, served_run, tmp_path, monkeypatch):
    from _deploy import png_bytes, rgba_silhouette
    from stillroom.deploy.feedback_export import export_feedback

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = _tree(tmp_path) | _tree(served_run)
    names = ["../../escape.png", "../" * 12 + "tmp/escape_root.png", str(tmp_path / "absolute.png"), "..\\..\\w.png"]
    ids = []
    for i, name in enumerate(names):
        img = rgba_silhouette(box=(10 + i, 8, 38, 40))  # distinct bytes: one exported file each
        r = client.post("/predict", files={"file": (name, png_bytes(img), "image/png")})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
        assert client.post(f"/feedback/{ids[-1]}", json={"action": "correct", "label": "disc"}).status_code == 200
    # Path-like ids are only looked up in SQLite: 404 (or 405/422 when routing rejects them), never a file.
    for pid in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", str(tmp_path / "t.sqlite")):
        r = client.post(f"/feedback/{pid}", json={"action": "confirm"})
        assert r.status_code in (404, 405, 422), (pid, r.status_code)
    new = (_tree(tmp_path) | _tree(served_run)) - before
    assert {p.name for p in new} <= {"t.sqlite", "t.sqlite-wal", "t.sqlite-shm"}, new
    assert not Path("/tmp/escape_root.png").exists()
    # Exporting the feedback names files by content hash, never by the uploaded name.
    man = export_feedback(client.db, tmp_path / "out")
    assert len(man["items"]) == len(names)
    for item in man["items"]:
        assert re.fullmatch(r"disc/[0-9a-f]{16}\.png", item["path"]), item["path"]
    assert all(p.resolve().is_relative_to((tmp_path / "out").resolve()) for p in (tmp_path / "out").rglob("*"))


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_serve_binds_loopback_by_default(served_run, tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from stillroom.cli import app
    from stillroom.cli.deploy import serve_cmd

    default = inspect.signature(serve_cmd).parameters["host"].default
    assert getattr(default, "default", default) == "127.0.0.1"
    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda a, **kw: seen.update(kw))
    res = CliRunner().invoke(app, ["serve", str(served_run), "--db", str(tmp_path / "s.sqlite")])
    assert res.exit_code == 0, res.output
    assert seen["host"] == "127.0.0.1"
    # Exposing it takes an explicit flag.
    res = CliRunner().invoke(app, ["serve", str(served_run), "--db", str(tmp_path / "s.sqlite"), "--host", "0.0.0.0"])
    assert res.exit_code == 0 and seen["host"] == "0.0.0.0"
