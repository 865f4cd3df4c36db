"""The prediction service (FastAPI TestClient): every endpoint, bad uploads, telemetry rows, feedback export."""

from __future__ import annotations

import json
import sqlite3
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from _deploy import exported_run, link_run, png_bytes, png_header_only, rgba_silhouette  # noqa: E402
from stillroom._io import StillroomError, atomic_write_json, sha256_bytes, sha256_file  # noqa: E402
from stillroom.data.preprocess import preprocess_image  # noqa: E402
from stillroom.deploy.feedback_export import MANIFEST, UNLABELLED_DIR, export_feedback  # noqa: E402
from stillroom.deploy.service import Predictor, _temperature, create_app  # noqa: E402
from stillroom.deploy.telemetry import Telemetry  # noqa: E402
from stillroom.runs import load_run  # noqa: E402

MAX_BYTES, MAX_PIXELS = 64 * 1024, 512 * 512


@pytest.fixture(scope="module")
def run(teacher_run, tmp_path_factory):
    return exported_run(teacher_run, tmp_path_factory.mktemp("deploy"))


@pytest.fixture()
def client(run, tmp_path):
    app = create_app(run, db_path=tmp_path / "t.sqlite", max_upload_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    with TestClient(app) as c:
        c.db = tmp_path / "t.sqlite"
        yield c


def _val_image(run) -> tuple[bytes, int]:
    index_dir = json.loads((run / "model.json").read_text())["index"]
    from stillroom.data.index import load_index

    idx = load_index(index_dir)
    row = int(idx.split_indices("val")[0])
    return (idx.root / idx.paths[row]).read_bytes(), int(idx.labels[row])


def _post(client, data: bytes, ctype: str = "image/png", name: str = "x.png"):
    return client.post("/predict", files={"file": (name, data, ctype)})


def test_predict_mask_image_matches_training_and_pytorch(client, run):
    data, label = _val_image(run)
    r = _post(client, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] in ("accept", "uncertain", "reject") and body["mask_source"] == "mask"
    assert len(body["top5"]) == 4  # 4 classes: top-5 is clipped to K
    probs = [t["probability"] for t in body["top5"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0)
    assert body["temperature_source"].startswith("calibration.json")
    # The silhouette is the training preprocessing of the upload.
    import base64
    import io

    sil = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["silhouette_png"].split(",", 1)[1]))))
    img = Image.open(io.BytesIO(data))
    np.testing.assert_array_equal(sil, preprocess_image(img, 32))
    # Probabilities are softmax(z / T) of the PyTorch logits of that silhouette (ONNX parity <= 1e-3).
    lr = load_run(run)
    with torch.no_grad():
        z = lr.model(lr.normalizer(torch.from_numpy(sil.copy())[None, None])).double()[0]
    p = torch.softmax(z / body["temperature"], 0).numpy()
    assert body["top5"][0]["class_id"] == int(p.argmax())
    assert body["top5"][0]["probability"] == pytest.approx(float(p.max()), abs=1e-3)
    assert body["input_sha256"] == sha256_bytes(data)


def test_predict_rgba_uses_alpha_and_telemetry_row(client, run):
    data = png_bytes(rgba_silhouette())
    body = _post(client, data).json()
    assert body["mask_source"] == "alpha" and "alpha > 127" in body["mask_rule"]
    con = sqlite3.connect(client.db)
    con.row_factory = sqlite3.Row
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = con.execute("SELECT * FROM predictions WHERE id = ?", (body["id"],)).fetchone()
    assert row["input_sha256"] == sha256_bytes(data) and bytes(row["input_bytes"]) == data
    assert row["verdict"] == body["verdict"] and row["reason"] == body["reason"]
    thresholds = json.loads(row["thresholds_json"])
    ladder = json.loads((run / "ladder.json").read_text())
    assert (thresholds["t1"], thresholds["t2"], thresholds["margin"]) == (ladder["t1"], ladder["t2"], ladder["margin"])
    weights = json.loads(row["weights_json"])
    assert weights == {
        "onnx:model.onnx": sha256_file(run / "export" / "model.onnx"),
        "safetensors:best.safetensors": sha256_file(run / "best.safetensors"),
    }
    assert "max_logit" in json.loads(row["scores_json"]) and row["created_at"].endswith("+00:00")


def test_feedback_endpoint(client):
    pid = _post(client, png_bytes(rgba_silhouette())).json()["id"]
    r = client.post(f"/feedback/{pid}", json={"action": "correct", "label": "triangle"})
    assert r.status_code == 200 and r.json()["label"] == "triangle"
    assert client.post(f"/feedback/{pid}", json={"action": "confirm"}).json()["action"] == "confirm"
    assert client.post(f"/feedback/{pid}", json={"action": "not_species"}).json()["label"] is None
    assert client.post(f"/feedback/{pid}", json={"action": "correct", "label": "unicorn"}).status_code == 422
    assert client.post(f"/feedback/{pid}", json={"action": "correct"}).status_code == 422
    assert client.post(f"/feedback/{pid}", json={"action": "maybe"}).status_code == 422
    assert client.post("/feedback/nope", json={"action": "confirm"}).status_code == 404
    con = sqlite3.connect(client.db)
    rows = con.execute("SELECT action, label FROM feedback WHERE prediction_id = ? ORDER BY id", (pid,)).fetchall()
    assert rows[0] == ("correct", "triangle") and rows[-1] == ("not_species", None) and len(rows) == 3


def _json(client, url: str, raw: str):
    return client.post(url, content=raw.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"})


def test_feedback_lone_surrogates_and_big_inputs_get_a_short_422(client):
    pid = _post(client, png_bytes(rgba_silhouette())).json()["id"]
    url = f"/feedback/{pid}"
    for raw, field in (
        ('{"action": "confirm", "comment": "\\ud800"}', "comment"),
        ('{"action": "correct", "label": "\\ud800"}', "label"),
        ('{"action": "correct", "label": "\\udfff\\ud800", "comment": "\\ud800"}', "label"),
        ('{"action": "not_sp\\ud800cies"}', "action"),
        ('{"action": "confirm", "\\ud800": 1}', "body"),  # a key that is a lone surrogate: the body is unreadable
    ):
        r = _json(client, url, raw)
        assert r.status_code == 422, (raw, r.status_code, r.text)
        assert field in r.json()["detail"], r.text
    # The reply names the field and the problem; it never echoes the rejected input.
    big = "x" * 5000
    for body, field in (
        ({"action": "confirm", "comment": big}, "comment"),
        ({"action": "correct", "label": big}, "label"),
        ({"action": big}, "action"),
        ({"action": "confirm", big: 1}, "body."),  # the unknown field is named, cut short
    ):
        r = client.post(url, json=body)
        assert r.status_code == 422, r.text[:300]
        assert len(r.content) < 1000 and big[:200] not in r.text, r.text[:300]
        assert field in r.json()["detail"] and r.json()["errors"][0]["problem"]
    # A feedback body far larger than any valid one is refused before it is parsed.
    r = client.post(url, json={"action": "confirm", "comment": "y" * (MAX_BYTES // 2)})
    assert r.status_code == 413 and len(r.content) < 1000, r.text[:300]
    # Nothing of it was stored.
    assert sqlite3.connect(client.db).execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 0


def test_feedback_rejects_what_it_cannot_mean(client):
    pid = _post(client, png_bytes(rgba_silhouette())).json()["id"]
    url = f"/feedback/{pid}"
    for body, field in (
        ({"action": "not_species", "label": "disc"}, "label"),  # a label with "not a species": dropped before
        ({"action": "confirm", "label": "cross"}, "label"),  # confirm takes the model's own label
        ({"action": "confirm", "lable": "disc"}, "lable"),  # unknown fields were accepted silently
        ({"action": "correct", "label": "disc", "extra": {"a": 1}}, "extra"),
        ({"action": "correct", "label": ""}, "label"),
    ):
        r = client.post(url, json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in r.json()["detail"], r.text
    for raw in ("[1, 2]", "null", "{", ""):
        assert _json(client, url, raw).status_code == 422, raw
    assert sqlite3.connect(client.db).execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 0
    # What the page sends is still accepted: an explicit null label with confirm / not_species.
    assert client.post(url, json={"action": "confirm", "label": None}).status_code == 200
    assert client.post(url, json={"action": "not_species", "label": None, "comment": "a rock"}).status_code == 200


def _bad_uploads():
    good = png_bytes(rgba_silhouette())
    return {
        "zero bytes": ((b"", "image/png"), 400, "empty"),
        "text as .png": ((b"this is not an image\n" * 3, "image/png"), 400, "not a decodable image"),
        "decompression bomb header": ((png_header_only(60000, 60000), "image/png"), 413, "decompression bomb"),
        "dimensions over the cap": ((png_header_only(1024, 1024), "image/png"), 413, "pixels; the limit"),
        "truncated pixel data": ((png_header_only(64, 64), "image/png"), 400, "truncated"),
        "wrong content type": ((good, "text/plain"), 415, "not accepted"),
        "declared type differs from bytes": ((good, "image/jpeg"), 415, "bytes are PNG"),
        "over the byte cap": ((b"\x89PNG" + bytes(MAX_BYTES), "image/png"), 413, "limit"),
        "blank image": ((png_bytes(Image.new("L", (16, 16), 255)), "image/png"), 422, "no object pixels"),
    }


@pytest.mark.parametrize("case", list(_bad_uploads()))
def test_bad_uploads(client, case):
    (data, ctype), status, message = _bad_uploads()[case]
    r = _post(client, data, ctype)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_bad_requests(client):
    r = client.post("/predict", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 415
    r = client.post("/predict", files={"other": ("x.png", png_bytes(rgba_silhouette()), "image/png")})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]
    # A chunked body without Content-Length is cut off while it is read.
    boundary = "b0undary"

    def chunks():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'.encode()
        yield b"Content-Type: image/png\r\n\r\n"
        for _ in range(20):
            yield bytes(16 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/predict", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413


def test_page_health_info_metrics(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert 'id="file"' in html and "/predict" in html and "/feedback/" in html
    assert "http://" not in html and "https://" not in html  # no CDN: nothing fetched from the network
    # The page says what the verdicts mean, reject included.
    assert 'id="legend"' in html and all(f'<dt class="{v}">{v}</dt>' in html for v in ("accept", "uncertain", "reject"))
    assert "lacks the shape structure of the training images" in html
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/info").json()
    assert info["classes"] == ["disc", "square", "triangle", "cross"] and info["limits"]["max_pixels"] == MAX_PIXELS
    assert info["display_names"] == info["classes"]  # no species names for drawn shapes: the ids are the names
    # the service says what it runs: the fastest runtime at batch 1 that passed export's parity check (auto)
    from stillroom.deploy.backends import serving_backend

    exp = json.loads((client.app.state.predictor.run_dir / "export" / "export.json").read_text())
    assert info["runtime"]["backend"] == serving_backend(exp, "fp32")["backend"] and info["runtime"]["version"]
    assert info["runtime"]["model"] == "fp32" and info["runtime"]["reason"]
    # The run is named, not located: no absolute path of the server's disk, but its name and hashes.
    run = client.app.state.predictor.run_dir
    assert str(run.parent) not in json.dumps(info)
    assert info["run"]["name"] == run.name
    assert info["run"]["weights_sha256"] == sha256_file(run / "best.safetensors")
    assert info["run"]["model_sha256"] == sha256_file(run / "export" / "model.onnx")
    assert info["run"]["ladder_sha256"] == sha256_file(run / "ladder.json")
    before = client.get("/metrics").json()
    answer = _post(client, png_bytes(rgba_silhouette())).json()
    verdict = answer["verdict"]
    assert answer["prediction"]["name"] == answer["prediction"]["label"] and "name" in answer["top5"][0]
    _post(client, b"", "image/png")  # rejected uploads are not predictions
    after = client.get("/metrics").json()
    assert after["predictions"] == before["predictions"] + 1
    assert after["by_verdict"][verdict] == before["by_verdict"][verdict] + 1


def test_structure_gate_rejects_an_all_black_square_before_the_model(client, run):
    import _bad_inputs as bad

    gate = client.get("/info").json()["thresholds"]["structure_gate"]
    assert set(gate) == {"fill", "aspect", "share"}
    body = _post(client, bad.full_frame()).json()
    assert body["verdict"] == "reject" and body["reason"] == "no-structure"
    assert body["structure"]["passed"] is False and "training range" in body["reason_text"]
    row = sqlite3.connect(client.db).execute("SELECT verdict, reason FROM predictions WHERE id = ?", (body["id"],))
    assert row.fetchone() == ("reject", "no-structure")
    # A training image passes the gate: the model's verdict stands.
    from stillroom.data.index import load_index

    idx = load_index(json.loads((run / "model.json").read_text())["index"])
    row_i = int(idx.split_indices("train")[idx.labels[idx.split_indices("train")] == 0][0])
    ok = _post(client, (idx.root / idx.paths[row_i]).read_bytes()).json()
    assert ok["structure"]["passed"] is True and ok["reason"] != "no-structure"


def test_ladder_json_without_structure_gate_still_serves(run, tmp_path):
    copy = link_run(run, tmp_path / "r", extra=("export",))
    ladder = json.loads((run / "ladder.json").read_text())
    assert ladder["structure_gate"] is not None and "structure_gate" in ladder["fit_summary"]
    atomic_write_json(copy / "ladder.json", {k: v for k, v in ladder.items() if k != "structure_gate"})
    with TestClient(create_app(copy, db_path=tmp_path / "t.sqlite")) as c:
        body = _post(c, png_bytes(rgba_silhouette())).json()
        assert body["structure"] is None and body["reason"] != "no-structure"
        assert c.get("/info").json()["thresholds"]["structure_gate"] is None
    gate = {**ladder["structure_gate"], "size": 64}
    atomic_write_json(copy / "ladder.json", {**ladder, "structure_gate": gate})
    with pytest.raises(StillroomError, match="structure gate fitted on 64 px"):
        Predictor(copy)


def test_temperature_sources(tmp_path):
    assert _temperature(tmp_path, "best", "abc") == (1.0, "default T = 1: no calibration.json in the run")
    atomic_write_json(tmp_path / "calibration.json", {"temperature": 1.7})
    assert _temperature(tmp_path, "best", "abc") == (1.7, "calibration.json")
    atomic_write_json(tmp_path / "calibration.json", {"weights": {"best": {"temperature": 2.0, "weights_sha256": "x"}}})
    with pytest.raises(StillroomError, match="other weights"):
        _temperature(tmp_path, "best", "abc")
    assert _temperature(tmp_path, "best", "x") == (2.0, "calibration.json [best]")
    atomic_write_json(tmp_path / "calibration.json", {"temperature": -1})
    with pytest.raises(StillroomError, match="> 0"):
        _temperature(tmp_path, "best", "abc")


def test_default_temperature_is_reported_and_stale_artefacts_refused(run, tmp_path):
    copy = link_run(run, tmp_path / "r", extra=("export", "ladder.json"))
    (copy / "calibration.json").unlink()
    p = Predictor(copy)
    assert p.temperature == 1.0 and "default" in p.temperature_source
    ladder = json.loads((copy / "ladder.json").read_text())
    atomic_write_json(copy / "ladder.json", {**ladder, "members": [{"sha256": "0" * 64}]})
    with pytest.raises(StillroomError, match="other weights"):
        Predictor(copy)
    (copy / "ladder.json").unlink()
    with pytest.raises(StillroomError, match="ladder.json"):
        Predictor(copy)
    exp = json.loads((copy / "export" / "export.json").read_text())
    atomic_write_json(copy / "export" / "export.json", {**exp, "weights": {**exp["weights"], "sha256": "0" * 64}})
    with pytest.raises(StillroomError, match="export again"):
        Predictor(copy)


def test_int8_model_can_be_served(run, tmp_path):
    exp = json.loads((run / "export" / "export.json").read_text())
    if not exp["int8_check"]["ok"]:
        with pytest.raises(StillroomError, match="accuracy check"):
            Predictor(run, model="int8")
        return
    with TestClient(create_app(run, db_path=tmp_path / "q.sqlite", model="int8")) as c:
        body = _post(c, png_bytes(rgba_silhouette())).json()
    assert body["model"]["file"] == "model_int8.onnx"


def test_telemetry_is_thread_safe(tmp_path):
    tel = Telemetry(tmp_path / "t.sqlite")
    base = {
        "input_sha256": "s", "mask_source": "mask", "silhouette_png": b"png", "verdict": "accept",
        "reason": "agreement", "pred_index": 0, "pred_label": "a", "top5_json": [], "scores_json": {},
        "thresholds_json": {}, "temperature": 1.0, "weights_json": {}, "model_file": "m.onnx",
    }  # fmt: skip

    def work(t: int) -> None:
        for i in range(25):
            tel.record_prediction({**base, "id": f"{t}-{i}"})
            tel.record_feedback(f"{t}-{i}", "confirm", "a")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tel.counts()["predictions"] == 100 and tel.counts()["feedback_by_action"]["confirm"] == 100
    tel.close()


def test_feedback_export_round_trip(client, run, tmp_path):
    from stillroom.data.import_folder import import_folder

    # Five distinct uploads: 3 corrected, 1 confirmed (accepted: not exported by default), 1 not a species.
    ids = []
    for i in range(5):
        box = (4 + i, 6, 30 + 2 * i, 40 - i)
        ids.append(_post(client, png_bytes(rgba_silhouette(box=box))).json()["id"])
    for pid, label in zip(ids[:3], ["disc", "disc", "cross"], strict=True):
        assert client.post(f"/feedback/{pid}", json={"action": "correct", "label": label}).status_code == 200
    client.post(f"/feedback/{ids[3]}", json={"action": "confirm"})
    client.post(f"/feedback/{ids[4]}", json={"action": "not_species"})
    tel = Telemetry(client.db)
    # Verdicts depend on the model; pin the one that matters (a confirmed *accepted* prediction is not a hard
    # example), and add one uncertain prediction nobody answered.
    with tel._conn:
        tel._conn.execute("UPDATE predictions SET verdict = 'accept' WHERE id = ?", (ids[3],))
    row = dict(tel.get_prediction(ids[0], with_blobs=True))
    tel.record_prediction({**row, "id": "u1", "input_sha256": "f" * 64, "verdict": "uncertain", "created_at": None})
    tel.close()

    out = tmp_path / "fb"
    man = export_feedback(client.db, out)
    assert man["labelled"] == 3 and man["unlabelled"] == 1 and man["classes"] == ["cross", "disc"]
    assert sorted(p.name for p in out.iterdir()) == sorted([".unlabelled", MANIFEST, "cross", "disc"])
    assert len(list((out / UNLABELLED_DIR).iterdir())) == 1
    assert man["skipped"] == {
        "skip: confirmed accept (use include_confirmed)": 1,
        "skip: not a species (no class given)": 1,
    }
    assert {it["prediction_id"] for it in man["items"] if it["label"] == "disc"} == set(ids[:2])
    with pytest.raises(StillroomError, match="not empty"):
        export_feedback(client.db, out)
    man2 = export_feedback(client.db, out, include_confirmed=True, not_species_class="ood", overwrite=True)
    assert man2["labelled"] == 5 and "ood" in man2["classes"]
    # The export is importable as a dataset (silhouette kind, the same preprocessing again).
    idx = import_folder(out, tmp_path / "ds", kind="silhouette", size=32)
    assert len(idx) == 5 and set(idx.classes) == set(man2["classes"])


def test_cli_serve_and_feedback_export(run, tmp_path, monkeypatch):
    import typer
    import uvicorn
    from typer.testing import CliRunner

    from stillroom.cli.deploy import register

    app = typer.Typer()
    register(app)
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda a, **kw: seen.update(app=a, **kw))
    db = tmp_path / "cli.sqlite"
    res = CliRunner().invoke(app, ["serve", str(run), "--db", str(db), "--port", "8123", "--max-upload-mb", "1"])
    assert res.exit_code == 0, res.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123 and db.is_file()
    with TestClient(seen["app"]) as c:
        pid = _post(c, png_bytes(rgba_silhouette())).json()["id"]
        c.post(f"/feedback/{pid}", json={"action": "correct", "label": "disc"})
    res = CliRunner().invoke(app, ["feedback", "export", str(db), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "out" / "disc").iterdir())) == 1


def test_a_canonical_outline_recipe_renders_uploads_through_it(run, tmp_path):
    """A model trained on canonical-outline data (issue 16 item 1) must see uploads rendered the same way: the
    service renders through the recipe's outline, not plain ``preprocess_mask`` (which it still uses otherwise)."""
    from stillroom.data.outline import Outline, render_silhouette
    from stillroom.data.preprocess import object_mask

    copy = link_run(run, tmp_path / "canon", extra=("ladder.json", "export"))
    meta = json.loads((copy / "model.json").read_text())
    (copy / "model.json").unlink()  # a hard link of the shared run: write a new file, never through the link
    meta["recipe"]["outline"] = {"mode": "canonical", "grid": 16, "sigma": 0.8, "upsample": "bicubic", "threshold": 0.5}
    atomic_write_json(copy / "model.json", meta)
    from PIL import ImageDraw

    img = Image.new("RGBA", (48, 48), (255, 255, 255, 0))
    ImageDraw.Draw(img).polygon([(6, 40), (24, 5), (42, 40), (24, 30)], fill=(180, 40, 40, 255))  # staircase edges
    canon, plain = Predictor(copy), Predictor(run)
    assert canon.outline == Outline(grid=16, sigma=0.8) and plain.outline is None
    obj = object_mask(img, source="t", alpha_threshold=canon.alpha_threshold)
    got, _ = canon.silhouette(img, source="t")
    want = render_silhouette(obj, canon.size, padding=canon.padding, outline=Outline(grid=16, sigma=0.8))
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, plain.silhouette(img, source="t")[0])  # the outline changed the pixels
