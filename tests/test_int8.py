"""int8 that keeps its accuracy (issue 15): NNCF post-training quantization, the fp32-vs-int8 check on val and
test, the gate that keeps a failed int8 model from being served, and the per-runtime record in export.json."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from _deploy import link_run, ort_top1_by_split  # noqa: E402
from stillroom._io import StillroomError, sha256_file  # noqa: E402
from stillroom.data.dataset import load_images  # noqa: E402
from stillroom.data.index import load_index  # noqa: E402
from stillroom.deploy import onnx_export  # noqa: E402
from stillroom.deploy._ort import normalize_uint8, ort_logits, ort_session  # noqa: E402
from stillroom.deploy.backends import make_runner, runner_logits  # noqa: E402
from stillroom.deploy.onnx_export import export_model_onnx, resolve_int8_method  # noqa: E402
from stillroom.models.factory import create_model  # noqa: E402
from stillroom.runs import split_rows  # noqa: E402


@pytest.fixture(scope="module")
def run(shapes_index, tiny_config, tmp_path_factory):
    """A mobilenet_v3_small (hardswish, squeeze-excitation) trained briefly on the shapes, exported with int8 by
    the default method (NNCF when installed) and a fitted ladder. One round of accuracy control: every round
    re-ranks all ~45 quantizer groups (~15 s here), and this briefly trained net misses the bar for all 30."""
    from stillroom.config import config_from_dict
    from stillroom.deploy.run_ladder import fit_run_ladder
    from stillroom.pipeline import train

    raw = tiny_config(shapes_index.root, "mnv3", model="mobilenet_v3_small", epochs=4)
    out = train(config_from_dict(raw), tmp_path_factory.mktemp("int8") / "mnv3")
    rep = onnx_export.export_onnx(out, int8=True, backend_timing=0.05, int8_control_iterations=1)
    fit_run_ladder(out)
    if rep["int8_check"]["ok"]:
        fit_run_ladder(out, served="int8")
    return out


def _mobilenet(num_classes: int = 5, size: int = 32) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small", 1, num_classes, size).train()
    with torch.no_grad():  # O(1) BatchNorm statistics, as a trained net has
        for _ in range(3):
            model(torch.randn(8, 1, size, size))
    return model.eval()


def test_resolve_int8_method(monkeypatch):
    assert resolve_int8_method("ort") == "ort"
    with pytest.raises(StillroomError, match="unknown int8 method"):
        resolve_int8_method("fp16")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    assert resolve_int8_method("auto") == "ort"  # without the int8 extra: ONNX Runtime's quantizer, recorded
    with pytest.raises(StillroomError, match=r"\.\[int8\]"):
        resolve_int8_method("nncf")


def test_nncf_quantizes_mobilenet_to_a_qdq_file_onnx_runtime_runs(tmp_path):
    pytest.importorskip("nncf")
    import onnx

    model = _mobilenet()
    export_model_onnx(model, tmp_path / "fp32.onnx", (1, 32, 32), dynamic=True)
    masks = np.random.default_rng(0).integers(0, 2, (12, 1, 32, 32), dtype=np.uint8) * 255
    calib = normalize_uint8(masks, [0.5], [0.5])
    info = onnx_export.quantize_int8_nncf(tmp_path / "fp32.onnx", tmp_path / "q.onnx", calib)
    assert info["sha256"] == sha256_file(tmp_path / "q.onnx")
    assert info["method"] == "nncf" and info["fast_bias_correction"] is False and info["subset_size"] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx", "q.onnx"]
    ops = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    got = ort_logits(ort_session(tmp_path / "q.onnx", threads=1), calib[:8], batch_size=8)
    with torch.no_grad():
        ref = model(torch.from_numpy(calib[:8])).numpy()
    assert got.shape == ref.shape and np.isfinite(got).all()
    with pytest.raises(StillroomError, match="at least one"):
        onnx_export.quantize_int8_nncf(tmp_path / "fp32.onnx", tmp_path / "q2.onnx", calib[:0])


def test_nncf_full_bias_correction_failure_falls_back_and_is_recorded(tmp_path, monkeypatch):
    """NNCF's full bias correction can fail inside ONNX Runtime (ResNets, ORT 1.32): the fast variant is used
    and the failure recorded; any other failure is a StillroomError."""
    nncf = pytest.importorskip("nncf")
    export_model_onnx(_mobilenet(), tmp_path / "fp32.onnx", (1, 32, 32), dynamic=True)
    calib = normalize_uint8(np.full((4, 1, 32, 32), 255, np.uint8), [0.5], [0.5])
    real = nncf.quantize

    def flaky(model, dataset, **kw):
        if not kw["fast_bias_correction"]:
            raise RuntimeError("Failed to find node output")
        return real(model, dataset, **kw)

    monkeypatch.setattr(nncf, "quantize", flaky)
    info = onnx_export.quantize_int8_nncf(tmp_path / "fp32.onnx", tmp_path / "q.onnx", calib)
    assert info["fast_bias_correction"] is True and "Failed to find node output" in info["full_bias_correction_error"]
    monkeypatch.setattr(nncf, "quantize", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad graph")))
    with pytest.raises(StillroomError, match="NNCF int8 quantization failed.*bad graph"):
        onnx_export.quantize_int8_nncf(tmp_path / "fp32.onnx", tmp_path / "q.onnx", calib)


def test_int8_check_records_val_and_test_and_is_real(run):
    rep = json.loads((run / "export" / "export.json").read_text())
    chk = rep["int8_check"]
    if importlib.util.find_spec("nncf") is not None:
        assert chk["method"] == "nncf" and chk["quantizer"]["fast_bias_correction"] is False
        ac = chk["quantizer"]["accuracy_control"]  # on labelled training images, never val/test
        index = load_index(rep["index"])
        assert ac["split"] == "train" and ac["n"] == len(index.split_indices("train")) and ac["max_drop"] == 0.01
        assert ac["max_iterations"] == 1  # export_onnx(int8_control_iterations=1) reached NNCF
        assert 0 <= ac["top1_int8"] <= 1 and 0 <= ac["top1_fp32"] <= 1 and ac["quantizers"] > 0
        assert chk["calibration"] == {"split": "train", "n": chk["calibration"]["n"], "method": "nncf", "format": "QDQ"}
    assert set(chk["splits"]) == {"val", "test"} and chk["split"] == "val"
    assert chk["max_drop"] == 0.01
    for name in ("top1_fp32", "top1_int8", "top1_drop", "n", "top1_agreement"):  # top level = val (service, CLI)
        assert chk[name] == chk["splits"]["val"][name]
    # Recompute both splits from the files on disk, independently of the export code.
    for split, (n, acc_fp, acc_q) in ort_top1_by_split(run / "export", rep).items():
        rec = chk["splits"][split]
        assert rec["n"] == n
        assert rec["top1_fp32"] == pytest.approx(acc_fp) and rec["top1_int8"] == pytest.approx(acc_q)
        assert rec["top1_drop"] == pytest.approx(acc_fp - acc_q)
    assert chk["ok"] == (chk["splits"]["val"]["top1_drop"] <= chk["max_drop"] + 1e-12)
    assert chk["ok_test"] == (chk["splits"]["test"]["top1_drop"] <= chk["max_drop"] + 1e-12)


def test_backends_recorded_with_parity_and_fastest(run):
    rep = json.loads((run / "export" / "export.json").read_text())
    b = rep["backends"]
    ort = b["onnxruntime"]
    assert ort["available"] and ort["fp32"]["ok"] and ort["fp32"]["compiles"]
    assert max(p["max_abs_diff"] for p in ort["fp32"]["parity"].values()) <= rep["parity"]["atol"]
    assert set(ort["fp32"]["parity"]) == {"model.onnx", "model_dynamic.onnx"}
    # ONNX Runtime's int8 record is the int8 check itself (same runtime, same files)
    assert ort["int8"]["top1"]["val"] == pytest.approx(rep["int8_check"]["top1_int8"])
    assert ort["int8"]["ok"] == rep["int8_check"]["ok"]
    assert set(ort["fp32"]["latency"]) == {"1", "64"}
    assert set(b["fastest"]) == {"1", "64"}
    for batch, f in b["fastest"].items():
        passing = [
            b[k][m]["latency"][batch]["median_ms"]
            for k in ("onnxruntime", "openvino")
            for m in ("fp32", "int8")
            if b[k].get(m, {}).get("ok") and batch in b[k][m].get("latency", {})
        ]
        assert b[f["backend"]][f["model"]]["ok"] and f["median_ms"] == min(passing)
    if importlib.util.find_spec("openvino") is None:
        assert b["openvino"] == {"available": False}
    else:
        assert b["openvino"]["fp32"]["ok"]  # OpenVINO runs the fp32 file within 1e-3 of PyTorch (f32 precision)


def test_openvino_runner_matches_onnx_runtime(run):
    pytest.importorskip("openvino")
    rep = json.loads((run / "export" / "export.json").read_text())
    index = load_index(rep["index"])
    rows = index.split_indices("val")[:5]
    x = normalize_uint8(np.asarray(load_images(index)[rows]), rep["input"]["mean"], rep["input"]["std"])
    for name in ("model.onnx", "model_dynamic.onnx"):
        ov_run, fixed = make_runner("openvino", run / "export" / name, threads=1)
        assert fixed == (1 if name == "model.onnx" else None)
        got = runner_logits(ov_run, fixed, x)
        ref = ort_logits(ort_session(run / "export" / name, threads=1), x, None if fixed else 5)
        assert np.abs(got - ref).max() <= 1e-3
    with pytest.raises(StillroomError, match="unknown backend"):
        make_runner("tvm", run / "export" / "model.onnx")


SEEN: dict = {}


def _sabotaged_quantizer(src, dst, calib, control=None, **_):
    """Stands in for NNCF: a valid ONNX file whose classifier bias is scrambled (a broken int8 model)."""
    import onnx
    from onnx import numpy_helper

    SEEN.update(calib=calib, control=control)

    model = onnx.load(str(src))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    for init in model.graph.initializer:
        if init.name == gemm.input[2]:
            bias = numpy_helper.to_array(init).copy()
            bias[:] = 0.0
            bias[-1] = 1e4  # always the last class
            init.CopyFrom(numpy_helper.from_array(bias, init.name))
    onnx.save(model, str(dst))
    return {"sha256": sha256_file(dst), "method": "nncf", "fast_bias_correction": False, "subset_size": len(calib)}


def test_failed_int8_check_is_recorded_and_never_served(run, tmp_path, monkeypatch):
    """If the accuracy check were skipped or ignored, the broken int8 file below would be served: it must not."""
    from stillroom.deploy.service import Predictor

    copy = link_run(run, tmp_path / "bad", extra=("ladder.json",))
    monkeypatch.setattr(onnx_export, "resolve_int8_method", lambda method: "nncf")
    monkeypatch.setattr(onnx_export, "quantize_int8_nncf", _sabotaged_quantizer)
    rep = onnx_export.export_onnx(copy, int8=True, backend_timing=0.02)
    chk = rep["int8_check"]
    assert chk["top1_drop"] > chk["max_drop"] and chk["ok"] is False
    assert json.loads((copy / "export" / "export.json").read_text())["int8_check"]["ok"] is False
    assert rep["ok"] is True  # fp32 parity passed: the export itself stands, int8 is just not servable
    assert rep["backends"]["onnxruntime"]["int8"]["ok"] is False
    assert all(f["model"] == "fp32" for f in rep["backends"]["fastest"].values())  # a failed int8 is never fastest
    # Calibration and accuracy control saw training images only (the whole, small train split), never val/test.
    index = load_index(rep["index"])
    rows = index.split_indices("train")
    train = normalize_uint8(np.asarray(load_images(index)[rows]), rep["input"]["mean"], rep["input"]["std"])
    np.testing.assert_array_equal(SEEN["calib"], train)
    x_control, labels, k = SEEN["control"]
    np.testing.assert_array_equal(x_control, train)
    np.testing.assert_array_equal(labels, index.labels[rows])
    assert k == len(index.classes)
    with pytest.raises(StillroomError, match="accuracy check"):
        Predictor(copy, model="int8")
    Predictor(copy, model="fp32")  # fp32 is still served
    if json.loads((run / "export" / "export.json").read_text())["int8_check"]["ok"]:
        Predictor(run, model="int8")  # the gate lets a passing int8 model through


def test_int8_ladder_and_temperature_are_fitted_on_the_int8_logits(run, tmp_path):
    """Issue 15 item 3: what is served is judged on its own logits. The int8 ladder's thresholds are exactly those of
    a ladder fitted on the int8 file's validation logits in ONNX Runtime, the int8 temperature is stored for that
    file's sha256, and the service uses both when it serves int8 (and refuses to without them)."""
    from stillroom.deploy.ladder import Ladder
    from stillroom.deploy.run_ladder import fit_run_ladder
    from stillroom.deploy.service import Predictor

    copy = link_run(run, tmp_path / "r", extra=("ladder.json",))
    # a limit no drop can exceed, so the tiny model's int8 file is servable whatever its accuracy
    exp = onnx_export.export_onnx(copy, int8=True, int8_method="ort", int8_max_drop=1.0, backends=False)
    assert exp["int8_check"]["ok"]
    lad8 = fit_run_ladder(copy, served="int8")
    index = load_index(exp["index"])
    rows = index.split_indices("val")
    x = normalize_uint8(np.asarray(load_images(index)[rows]), exp["input"]["mean"], exp["input"]["std"])
    z8 = ort_logits(ort_session(copy / "export" / exp["models"]["int8"]["file"], threads=1), x, batch_size=64)
    assert lad8.thresholds() == Ladder(sink=False).fit(z8, target_accept=0.95).thresholds()
    assert lad8.thresholds() != Ladder.load(copy / "ladder.json").thresholds()  # not the fp32 ones
    saved = json.loads((copy / "ladder_int8.json").read_text())
    assert saved["fit_data"]["served"] == "int8"
    assert saved["fit_data"]["served_file"]["sha256"] == exp["models"]["int8"]["sha256"]
    entry = json.loads((copy / "calibration.json").read_text())["weights"]["best:int8"]
    assert entry["weights_sha256"] == exp["models"]["int8"]["sha256"] and entry["fit_split"] == "val"
    p = Predictor(copy, model="int8")
    assert p.temperature_source == "calibration.json [best:int8]"
    assert p.temperature == pytest.approx(entry["temperature"])
    assert p.ladder.thresholds() == lad8.thresholds()
    assert Predictor(copy, model="fp32").temperature_source == "calibration.json [best]"  # fp32 keeps its own
    (copy / "ladder_int8.json").unlink()
    with pytest.raises(StillroomError, match="ladder_int8.json: not found"):
        Predictor(copy, model="int8")


def test_cli_export_int8_options(run, tmp_path):
    import typer
    from typer.testing import CliRunner

    from stillroom.cli.deploy import register

    app = typer.Typer()
    register(app)
    copy = link_run(run, tmp_path / "cli")
    args = ["export", str(copy), "--int8", "--int8-method", "ort", "--int8-max-drop", "0.5", "--no-backends"]
    res = CliRunner().invoke(app, [*args, "--no-dynamic", "--no-ladder"])
    assert res.exit_code == 0, res.output
    rep = json.loads((copy / "export" / "export.json").read_text())
    assert rep["int8_check"]["method"] == "ort" and rep["int8_check"]["max_drop"] == 0.5 and "backends" not in rep
    assert "int8 check (ort)" in res.output and "val" in res.output and "test" in res.output
    res = CliRunner().invoke(app, ["export", str(copy), "--int8", "--int8-method", "fp16", "--no-ladder"])
    assert isinstance(res.exception, StillroomError)


def test_accuracy_control_on_agreement_with_fp32(run, tmp_path):
    """``--int8-control-metric agreement``: NNCF's accuracy control measures int8's agreement with fp32's argmax on
    every training row (no labels), so fp32 scores 1 and the record says what was measured."""
    pytest.importorskip("nncf")
    import typer
    from typer.testing import CliRunner

    from stillroom.cli.deploy import register

    app = typer.Typer()
    register(app)
    copy = link_run(run, tmp_path / "agree")
    args = ["export", str(copy), "--int8", "--int8-method", "nncf", "--int8-control-metric", "agreement"]
    args += ["--int8-control-drop", "0.02", "--int8-control-iterations", "1", "--no-backends", "--no-ladder"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ac = json.loads((copy / "export" / "export.json").read_text())["int8_check"]["quantizer"]["accuracy_control"]
    assert ac["metric"].startswith("agreement") and ac["top1_fp32"] == 1.0 and ac["max_drop"] == 0.02
    assert ac["max_iterations"] == 1  # the CLI default is 30
    assert ac["n"] == len(load_index(json.loads((copy / "model.json").read_text())["index"]).split_indices("train"))
    bad = CliRunner().invoke(app, ["export", str(copy), "--int8", "--int8-control-iterations", "0", "--no-ladder"])
    assert isinstance(bad.exception, StillroomError) and "--int8-control-iterations 0" in str(bad.exception)
    with pytest.raises(StillroomError, match="unknown int8 control metric"):
        onnx_export.quantize_int8_nncf(
            copy / "export" / "model.onnx", tmp_path / "x.onnx", np.zeros((1, 1, 32, 32), np.float32),
            control=(np.zeros((1, 1, 32, 32), np.float32), np.zeros(1, np.int64), 2), control_metric="kl",
        )  # fmt: skip


def test_bench_backends_script_tiny(run, tmp_path, capsys):
    """The side-by-side benchmark runs end to end on a tiny repetition count (numbers not checked)."""
    import importlib.util as iu
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_backends.py"
    spec = iu.spec_from_file_location("_bench_backends", path)
    bench = iu.module_from_spec(spec)
    spec.loader.exec_module(bench)
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    tiny = [
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--warmup-seconds",
        "0",
        "--max-seconds",
        "1",
        "--threads",
        "1",
        "--settle-seconds",
        "0",
    ]
    argv = ["--config", "mobilenet_v3_small:32", "--num-classes", "5", "--int8-method", "ort", "--run", str(run)]
    assert bench.main([*argv, *tiny, "--md", str(md), "--json", str(tmp_path / "r.json")]) == 0
    assert bench.main([*argv, *tiny, "--md", str(md)]) == 0  # replaced in place, not appended
    text = md.read_text()
    assert "kept" in text and text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
    for label in ("| PyTorch eager | fp32 |", "| ONNX Runtime | fp32 |", "| ONNX Runtime | int8 | ort |"):
        assert f"| mobilenet_v3_small 32 px {label}" in text
    assert "mobilenet_v3_small 32 px (mnv3) | ONNX Runtime | int8 |" in text  # the trained run, its own method
    assert "int8 check" in text and "test" in text
    if iu.find_spec("openvino"):
        assert "| mobilenet_v3_small 32 px | OpenVINO | fp32 |" in text
    else:
        assert "not run: openvino not installed" in text
    assert json.loads((tmp_path / "r.json").read_text())[0]["raw"][0]["results"]


def test_int8_students_script_is_resumable_and_never_writes_the_run(run, tmp_path, monkeypatch):
    """benchmarks/int8_students.py: one row per (run, setting) from an export into a linked copy; a second call reads
    the finished export back instead of quantizing again; the run directory itself is untouched."""
    import importlib.util as iu
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "int8_students.py"
    spec = iu.spec_from_file_location("_int8_students", path)
    bench = iu.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "SETTINGS", {"ort": {"int8_method": "ort"}})
    before = sorted(p.name for p in run.iterdir())
    exported = run / "export" / "export.json"
    stamp = exported.stat().st_mtime_ns
    out = tmp_path / "out"
    assert bench.main([str(run), "--out", str(out)]) == 0
    copy = out / f"{run.name}__ort"
    first = json.loads((copy / "export" / "export.json").read_text())
    assert first["int8_check"]["method"] == "ort" and (copy / "best.safetensors").is_symlink()
    assert sorted(p.name for p in run.iterdir()) == before and exported.stat().st_mtime_ns == stamp
    table = (out / "int8_students.md").read_text()
    assert "| mnv3 | ort |" in table and "Command: `python benchmarks/int8_students.py" in table
    monkeypatch.setattr(bench, "export_onnx", lambda *a, **k: pytest.fail("a finished export was redone"))
    assert bench.main([str(run), "--out", str(out)]) == 0
    # --style: the ONNX files scored on another index of the same classes; on the run's own index the figures are
    # the export's own int8 check, computed by other code
    index = Path(json.loads((run / "model.json").read_text())["index"])
    assert bench.main([str(run), "--out", str(out), "--name", "styled", "--style", str(index)]) == 0
    with open(out / "styled.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    for split, r in first["int8_check"]["splits"].items():
        assert float(row[f"{index.name}_{split}_fp32"]) == pytest.approx(r["top1_fp32"])
        assert float(row[f"{index.name}_{split}_int8"]) == pytest.approx(r["top1_int8"])
    assert f"{index.name} val / test fp32 -> int8" in (out / "styled.md").read_text()


@pytest.fixture(scope="module")
def sink_run(shapes_index, ood_only, tiny_config, tmp_path_factory):
    """A K+1 mobilenet_v3_small (target-dampened, 4 shapes + the sink), trained briefly."""
    from stillroom.config import config_from_dict
    from stillroom.data.merge import merge_with_sink
    from stillroom.pipeline import train

    merged = merge_with_sink(shapes_index, ood_only, tmp_path_factory.mktemp("int8_merged") / "merged")
    raw = tiny_config(
        merged.root, "k1", model="mobilenet_v3_small", epochs=3,
        loss={"name": "target_dampened", "params": {"kd_weight": 0.0}},
    )  # fmt: skip
    return train(config_from_dict(raw), tmp_path_factory.mktemp("int8_k1") / "k1")


def test_int8_check_gates_the_sink_auroc_of_a_k_plus_one_model(sink_run):
    from stillroom.evaluate.ood import ood_metrics

    rep = onnx_export.export_onnx(
        sink_run, int8=True, int8_method="ort", backend_timing=0, int8_max_auroc_drop=0.01
    )  # fmt: skip
    chk = rep["int8_check"]
    # every runtime's int8 record carries the same sink check (ONNX Runtime's equals the export's own)
    ort8 = rep["backends"]["onnxruntime"]["int8"]
    assert ort8["sink"]["val"]["auroc_int8"] == pytest.approx(chk["splits"]["val"]["sink"]["auroc_int8"])
    assert ort8["ok"] == (
        ort8["top1_drop"]["val"] <= 0.01 + 1e-12 and ort8["sink"]["val"]["auroc_drop"] <= 0.01 + 1e-12
    )
    sk = chk["sink"]
    assert sk["max_auroc_drop"] == 0.01 and {"ok_val", "ok_test"} <= set(sk)
    index = load_index(rep["index"])
    images = load_images(index)
    sink = rep["output"]["sink_class"]
    fp_sess = ort_session(sink_run / "export" / "model_dynamic.onnx")
    q_sess = ort_session(sink_run / "export" / "model_int8.onnx")

    def auroc(sess, split):  # independent recomputation: 1 - softmax sink column, ID rows positive
        rows, ood = split_rows(index, split, sink)
        out = []
        for r in (rows, ood):
            z = ort_logits(sess, normalize_uint8(np.asarray(images[r]), rep["input"]["mean"], rep["input"]["std"]), 64)
            p = np.exp(z - z.max(1, keepdims=True))
            out.append(1.0 - (p / p.sum(1, keepdims=True))[:, sink])
        return ood_metrics(*out)["auroc"]

    for split in ("val", "test"):
        rec = chk["splits"][split]["sink"]
        assert rec["auroc_fp32"] == pytest.approx(auroc(fp_sess, split), abs=1e-6)
        assert rec["auroc_int8"] == pytest.approx(auroc(q_sess, split), abs=1e-6)
        assert rec["auroc_drop"] == pytest.approx(rec["auroc_fp32"] - rec["auroc_int8"])
    assert sk["auroc_fp32"] == chk["splits"]["val"]["sink"]["auroc_fp32"]
    top1_ok = chk["splits"]["val"]["top1_drop"] <= chk["max_drop"] + 1e-12
    assert chk["ok"] == (top1_ok and sk["ok_val"])
    # an impossible AUROC limit fails the check even when top-1 passes: the sink is gated, not just reported
    strict = onnx_export.export_onnx(
        sink_run, int8=True, int8_method="ort", backends=False, int8_max_drop=1.0, int8_max_auroc_drop=-1.0
    )
    assert strict["int8_check"]["sink"]["ok_val"] is False and strict["int8_check"]["ok"] is False


def _export_record(ov_ok: bool, ov_ms: float | None, ort_ms: float | None = 1.0) -> dict:
    def entry(ok: bool, ms: float | None) -> dict:
        return {"ok": ok, **({"latency": {"1": {"median_ms": ms}}} if ms is not None else {})}

    return {
        "backends": {
            "onnxruntime": {"available": True, "fp32": entry(True, ort_ms), "int8": entry(True, ort_ms)},
            "openvino": {"available": True, "fp32": entry(ov_ok, ov_ms), "int8": entry(ov_ok, ov_ms)},
        }
    }


def test_serving_backend_is_the_fastest_that_passed(monkeypatch):
    from stillroom.deploy import backends

    monkeypatch.setattr(backends, "available_backends", lambda: ["onnxruntime", "openvino"])
    assert backends.serving_backend(_export_record(True, 0.5), "fp32")["backend"] == "openvino"
    assert backends.serving_backend(_export_record(True, 2.0), "int8")["backend"] == "onnxruntime"
    # faster but failed its check (parity / int8 top-1): never chosen, and never servable by name
    assert backends.serving_backend(_export_record(False, 0.1), "fp32")["backend"] == "onnxruntime"
    with pytest.raises(StillroomError, match="no passing fp32 check for openvino"):
        backends.serving_backend(_export_record(False, 0.1), "fp32", "openvino")
    # no timing at all (export --backend-timing 0, or an older export.json): ONNX Runtime, and the reason says so
    none = backends.serving_backend({}, "fp32")
    assert none["backend"] == "onnxruntime" and "no batch-1 timing" in none["reason"]
    # installed here or not decides too: an OpenVINO-timed export served where OpenVINO is missing
    monkeypatch.setattr(backends, "available_backends", lambda: ["onnxruntime"])
    assert backends.serving_backend(_export_record(True, 0.5), "fp32")["backend"] == "onnxruntime"
    with pytest.raises(StillroomError, match="not installed"):
        backends.serving_backend(_export_record(True, 0.5), "fp32", "openvino")
    with pytest.raises(StillroomError, match="unknown backend"):
        backends.serving_backend({}, "fp32", "tvm")


def test_service_runs_on_the_chosen_backend_and_int8_on_its_ladder_backend(run, tmp_path, monkeypatch):
    """Issue 15 item 2: the service runs the backend it names. fp32 on OpenVINO gives ONNX Runtime's logits; int8
    is served on the runtime its ladder was fitted on, and another one is refused."""
    pytest.importorskip("openvino")
    from stillroom.deploy import backends
    from stillroom.deploy.run_ladder import fit_run_ladder
    from stillroom.deploy.service import Predictor

    copy = link_run(run, tmp_path / "r", extra=("ladder.json",))
    onnx_export.export_onnx(copy, int8=True, int8_method="ort", int8_max_drop=1.0, backend_timing=0.05)
    ov, ort = Predictor(copy, backend="openvino"), Predictor(copy, backend="onnxruntime")
    assert ov.runtime["backend"] == "openvino" and ort.runtime["backend"] == "onnxruntime"
    mask = np.asarray(load_images(load_index(json.loads((copy / "model.json").read_text())["index"]))[0, 0])
    assert np.abs(ov.logits(mask) - ort.logits(mask)).max() <= 1e-3
    # make OpenVINO the fastest passing int8 backend, then fit the int8 ladder: it records and uses OpenVINO
    exp_path = copy / "export" / "export.json"
    exp = json.loads(exp_path.read_text())
    exp["backends"]["openvino"]["int8"].update(ok=True, latency={"1": {"median_ms": 1e-6}})
    exp_path.write_text(json.dumps(exp))
    monkeypatch.setattr(backends, "available_backends", lambda: ["onnxruntime", "openvino"])
    fit_run_ladder(copy, served="int8")
    fit = json.loads((copy / "ladder_int8.json").read_text())["fit_data"]["served_file"]
    assert fit["backend"] == "openvino"
    p8 = Predictor(copy, model="int8")
    assert p8.runtime["backend"] == "openvino" and "fitted on openvino" in p8.runtime["reason"]
    with pytest.raises(StillroomError, match="fitted on openvino's int8 logits"):
        Predictor(copy, model="int8", backend="onnxruntime")


def test_stem_nodes_follow_the_first_conv_through_its_activation(tmp_path):
    """The stem = the first Conv and the Convs its output reaches through elementwise ops (HardSwish for
    MobileNetV3, Relu + MaxPool for ResNet); nothing else."""
    import onnx

    export_model_onnx(_mobilenet(), tmp_path / "m.onnx", (1, 32, 32), dynamic=True)
    names = onnx_export.stem_nodes(onnx.load(str(tmp_path / "m.onnx")))
    assert names == ["/features/features.0/features.0.0/Conv", "/features/features.1/block/block.0/block.0.0/Conv"]
    torch.manual_seed(0)
    export_model_onnx(create_model("resnet18", 1, 5, 32).eval(), tmp_path / "r.onnx", (1, 32, 32), dynamic=True)
    names = onnx_export.stem_nodes(onnx.load(str(tmp_path / "r.onnx")))
    assert names == ["/conv1/Conv", "/layer1/layer1.0/conv1/Conv"]
    empty = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    assert onnx_export.stem_nodes(empty) == []


def test_nncf_fp32_stem_leaves_the_stem_unquantized(tmp_path):
    """``fp32_stem``: neither input of the stem's Convs comes from a DequantizeLinear, every later Conv's does, the
    names are recorded, and ONNX Runtime runs the file."""
    pytest.importorskip("nncf")
    import onnx

    export_model_onnx(_mobilenet(), tmp_path / "fp32.onnx", (1, 32, 32), dynamic=True)
    masks = np.random.default_rng(0).integers(0, 2, (12, 1, 32, 32), dtype=np.uint8) * 255
    calib = normalize_uint8(masks, [0.5], [0.5])
    info = onnx_export.quantize_int8_nncf(tmp_path / "fp32.onnx", tmp_path / "q.onnx", calib, fp32_stem=True)
    stem = info["fp32_stem"]
    assert len(stem) == 2
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    producer = {out: n.op_type for n in graph.node for out in n.output}
    for node in graph.node:
        if node.op_type == "Conv" and not node.name.endswith(("fc1/Conv", "fc2/Conv")):  # NNCF keeps SE fp32
            fed = {producer.get(i) for i in node.input[:1]}
            assert (fed == {"DequantizeLinear"}) == (node.name not in stem), node.name
    got = ort_logits(ort_session(tmp_path / "q.onnx", threads=1), calib[:4], batch_size=4)
    assert got.shape == (4, 5) and np.isfinite(got).all()
