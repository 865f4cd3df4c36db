"""ONNX export, parity with PyTorch, int8 quantization, latency benchmark and BENCHMARKS.md (issue 6)."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from typer.testing import CliRunner  # noqa: E402

from _deploy import exported_run, link_run  # noqa: E402
from stillroom._io import StillroomError, sha256_file  # noqa: E402
from stillroom.data.dataset import load_images  # noqa: E402
from stillroom.data.index import load_index  # noqa: E402
from stillroom.deploy import onnx_export  # noqa: E402
from stillroom.deploy._ort import normalize_uint8, ort_logits, ort_session  # noqa: E402
from stillroom.deploy.latency import LATENCY_SECTION, bench_run, time_calls, update_benchmarks_md  # noqa: E402
from stillroom.deploy.onnx_export import (  # noqa: E402
    TrainImagesReader,
    export_int8,
    export_model_onnx,
    int8_source_model,
    onnx_parity,
)
from stillroom.models.factory import create_model  # noqa: E402


@pytest.fixture(scope="module")
def run(teacher_run, tmp_path_factory):
    return exported_run(teacher_run, tmp_path_factory.mktemp("deploy"))


@pytest.mark.parametrize("dynamic", [False, True])
def test_tiny_model_parity(tmp_path, dynamic):
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small", 1, 5, 32).eval()
    path = tmp_path / "m.onnx"
    sha = export_model_onnx(model, path, (1, 32, 32), dynamic=dynamic)
    assert sha == sha256_file(path)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    got = ort_logits(ort_session(path, threads=1), x.numpy(), batch_size=3 if dynamic else None)
    assert np.abs(ref - got).max() < 1e-4
    inp = ort_session(path).get_inputs()[0]
    assert (inp.shape[0] == 1) is (not dynamic)


def test_resnet18d_is_resnet_d_and_exports_with_parity(tmp_path):
    """``resnet18d`` (ResNet-D, a teacher option): three-convolution stem on one channel, shortcuts that average-pool
    before their 1x1 convolution (ceil mode, padding not counted: an ONNX AveragePool attribute pair that must
    survive export), and the exported graph gives PyTorch's logits."""
    torch.manual_seed(0)
    model = create_model("resnet18d", 1, 5, 32)
    stem = [m for m in model.conv1 if isinstance(m, torch.nn.Conv2d)]
    assert [c.in_channels for c in stem] == [1, 32, 32] and all(c.kernel_size == (3, 3) for c in stem)
    pool = model.layer2[0].downsample[0]
    assert isinstance(pool, torch.nn.AvgPool2d) and pool.ceil_mode and not pool.count_include_pad
    _with_bn_statistics(model, 33)
    model.eval()
    path = tmp_path / "r18d.onnx"
    export_model_onnx(model, path, (1, 33, 33), dynamic=True)  # odd side: ceil mode decides the shortcut's size
    x = torch.randn(2, 1, 33, 33)
    with torch.no_grad():
        ref = model(x).numpy()
    got = ort_logits(ort_session(path, threads=1), x.numpy(), batch_size=2)
    assert np.abs(ref - got).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))


def _with_bn_statistics(model, size):
    """Untrained torchvision nets have tiny activations; a few train-mode passes give O(1) BN statistics."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, size, size))
    return model.eval()


@pytest.mark.parametrize(("arch", "padded", "folded"), [("mobilenet_v3_small", 3, 9), ("mobilenet_v3_large", 7, 8)])
def test_int8_source_model_same_function(arch, padded, folded):
    from torch import nn

    torch.manual_seed(0)
    model = _with_bn_statistics(create_model(arch, 1, 7, 32), 32)
    rewritten, counts = int8_source_model(model)
    assert counts == {"depthwise_padded": padded, "se_gates_folded": folded}
    dw = [m for m in rewritten.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert dw and all(m.groups == m.out_channels and m.out_channels % 16 == 0 for m in dw)
    assert not any(isinstance(m, nn.Hardsigmoid) for m in rewritten.modules())
    assert any(isinstance(m, nn.Hardsigmoid) for m in model.modules())  # the original is untouched
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        ref, got = model(x), rewritten(x)
    assert torch.allclose(ref, got, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    _, counts = int8_source_model(create_model("resnet18", 1, 7, 32))
    assert counts == {"depthwise_padded": 0, "se_gates_folded": 0}


def test_export_int8_mobilenet(tmp_path):
    import onnx

    torch.manual_seed(0)
    model = _with_bn_statistics(create_model("mobilenet_v3_small", 1, 5, 32), 32)
    calib = np.random.default_rng(0).integers(0, 2, (32, 1, 32, 32), dtype=np.uint8) * 255
    reader = TrainImagesReader(calib, np.arange(32), [0.5], [0.5], batch_size=8)
    info = export_int8(model, tmp_path / "q.onnx", (1, 32, 32), dynamic=True, reader=reader)
    assert info["sha256"] == sha256_file(tmp_path / "q.onnx") and info["depthwise_padded"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]  # no temporary files left
    ops = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    # Only HardSwish's HardSigmoid remains (one per HardSwish of the net); the 9 SE gates became folded Clips.
    assert ops.count("HardSigmoid") == sum(isinstance(m, torch.nn.Hardswish) for m in model.modules())
    x = normalize_uint8(calib[:8], [0.5], [0.5])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = ort_logits(ort_session(tmp_path / "q.onnx", threads=1), x, batch_size=8)
    assert got.shape == ref.shape and np.isfinite(got).all()


def test_onnx_parity_by_hand():
    a = np.array([[1.0, 2.0], [3.0, 0.0]])
    b = np.array([[1.0, 2.5], [2.0, 2.1]])
    assert onnx_parity(a, b) == {"n": 2, "max_abs_diff": 2.1, "mean_abs_diff": 0.9, "top1_agreement": 0.5}


def test_normalize_matches_training_normalizer():
    from stillroom.data.dataset import Normalizer

    x = np.random.default_rng(0).integers(0, 256, (2, 1, 8, 8), dtype=np.uint8)
    ref = Normalizer([0.7], [0.3])(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(normalize_uint8(x, [0.7], [0.3]), ref)


def test_export_files_parity_and_int8(run):
    rep = json.loads((run / "export" / "export.json").read_text())
    assert rep["ok"] and rep["parity"]["ok"]
    for key, entry in rep["models"].items():
        assert sha256_file(run / "export" / entry["file"]) == entry["sha256"], key
    assert set(rep["models"]) == {"fp32", "fp32_dynamic", "int8"}
    for key in ("fp32", "fp32_dynamic"):
        par = rep["parity"][key]
        assert par["max_abs_diff"] <= 1e-3 and par["top1_agreement"] == 1.0
    assert rep["weights"]["sha256"] == sha256_file(run / "best.safetensors")
    chk = rep["int8_check"]
    assert chk["calibration"]["split"] == "train" and chk["n"] > 0
    assert chk["top1_drop"] == pytest.approx(chk["top1_fp32"] - chk["top1_int8"])
    assert chk["ok"] == (chk["top1_drop"] <= chk["max_drop"] + 1e-12)
    if chk["method"] == "ort":
        assert chk["rewrites"] == {"depthwise_padded": 0, "se_gates_folded": 0}  # resnet18: nothing to rewrite
    else:
        assert chk["method"] == "nncf" and chk["rewrites"] == {}
    # The recorded parity is real: recompute it on validation images independently of the export code.
    index = load_index(rep["index"])
    rows = index.split_indices("val")[:8]
    x = normalize_uint8(np.asarray(load_images(index)[rows]), rep["input"]["mean"], rep["input"]["std"])
    from stillroom.runs import load_run

    with torch.no_grad():
        ref = load_run(run).model(torch.from_numpy(x)).numpy()
    got = ort_logits(ort_session(run / "export" / "model.onnx"), x)
    assert np.abs(ref - got).max() <= 1e-3


def test_parity_failure_is_recorded_and_raises(run, tmp_path, monkeypatch):
    copy = link_run(run, tmp_path / "copy")
    real = onnx_export.predict_logits
    monkeypatch.setattr(onnx_export, "predict_logits", lambda *a, **k: real(*a, **k) + 0.01)
    with pytest.raises(StillroomError, match="parity failed"):
        onnx_export.export_onnx(copy, dynamic=False)
    rep = json.loads((copy / "export" / "export.json").read_text())
    assert rep["ok"] is False and rep["parity"]["fp32"]["max_abs_diff"] == pytest.approx(0.01, abs=1e-4)


def test_time_calls_budget():
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=3, repeats=7, max_seconds=60)
    assert len(times) == 7 and len(calls) == 10
    times = time_calls(lambda: None, warmup=0, repeats=10**9, max_seconds=0.0, min_runs=4)
    assert len(times) == 4
    calls.clear()
    t0 = time.perf_counter()
    times = time_calls(lambda: calls.append(1), warmup=2, repeats=3, max_seconds=60, warmup_seconds=0.05)
    assert time.perf_counter() - t0 >= 0.05 and len(times) == 3 and len(calls) > 5


def test_bench_run_and_benchmarks_md(run, tmp_path):
    res = bench_run(run, batch_sizes=(1, 4), threads=1, warmup=1, repeats=3, max_seconds=5, warmup_seconds=0)
    got = {(r["backend"], r["batch"]) for r in res["results"]}
    ov = ("ov_fp32", "ov_int8") if importlib.util.find_spec("openvino") else ()
    assert got == {(b, n) for b in ("eager", "ort_fp32", "ort_int8", *ov) for n in (1, 4)}
    if not ov:
        assert {(s["backend"], s["reason"]) for s in res["skipped"]} == {
            (b, "openvino not installed") for b in ("ov_fp32", "ov_int8")
        }
    for r in res["results"]:
        assert r["runs"] == 3 and 0 < r["median_ms"] <= r["p95_ms"] * (1 + 1e-9) + 1e-9
        assert r["throughput_img_s"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3))
        if r["file"]:
            assert r["size_bytes"] == (run / "export" / r["file"]).stat().st_size
    fp32_files = {r["batch"]: r["file"] for r in res["results"] if r["backend"] == "ort_fp32"}
    assert fp32_files == {1: "model.onnx", 4: "model_dynamic.onnx"}

    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Training\n\nkeep me\n\n## Other\n\nand me\n")
    update_benchmarks_md(md, res, "stillroom bench-latency RUN")
    update_benchmarks_md(md, res, "stillroom bench-latency RUN --threads 1")  # same configuration: replaced
    other = {**res, "config": {**res["config"], "img_size": 64}}
    update_benchmarks_md(md, other, "stillroom bench-latency --arch x")  # another configuration: appended
    text = md.read_text()
    assert "keep me" in text and "and me" in text and text.count(LATENCY_SECTION) == 1
    assert text.count("bench-latency:begin") == 2
    assert "`stillroom bench-latency RUN --threads 1`" in text and "`stillroom bench-latency RUN`" not in text
    assert text.index("## Other") < text.index(LATENCY_SECTION)
    assert "| ONNX Runtime int8 (QDQ) | 4 |" in text


def test_cli_export_ladder_only_and_bench(run, tmp_path, monkeypatch):
    import typer

    from stillroom.cli.deploy import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    copy = link_run(run, tmp_path / "cli", extra=("export",))
    res = runner.invoke(app, ["export", str(copy), "--no-onnx", "--target-accept", "0.9"])
    assert res.exit_code == 0, res.output
    assert json.loads((copy / "ladder.json").read_text())["target_accept"] == 0.9
    md = tmp_path / "B.md"
    args = ["bench-latency", str(copy), "--batch", "1", "--threads", "1", "--repeats", "2", "--warmup", "1"]
    res = runner.invoke(app, [*args, "--md", str(md)])
    assert res.exit_code == 0, res.output
    assert "bench-latency:begin" in md.read_text() and (copy / "export" / "latency.json").is_file()
    res = runner.invoke(app, ["bench-latency"])
    assert isinstance(res.exception, StillroomError)


def test_run_ladder_file_and_report(run, shapes_index):
    from stillroom.deploy.ladder import Ladder
    from stillroom.deploy.run_ladder import run_ladder_report

    lad = Ladder.load(run / "ladder.json")
    assert lad.extra_["members"][0]["sha256"] == sha256_file(run / "best.safetensors")
    assert lad.fit_summary_["id"]["accept"] >= 0.95 and lad.n_members_ == 1 and lad.margin_ is not None
    # Plumbing of the OOD source (any index of the same size works; the shapes themselves are not OOD).
    rep = run_ladder_report(run, split="test", ood_index=shapes_index.root)
    n_val = len(shapes_index.split_indices("test"))
    assert rep["id"]["n"] == n_val and rep["ood"]["n"] == n_val and rep["split"] == "test"
    assert rep["id"]["coverage"] + rep["id"]["uncertain"] + rep["id"]["reject"] == pytest.approx(1.0)
    assert rep["ood"]["acceptance"] == pytest.approx(rep["id"]["coverage"])  # same images, same verdicts
    # the report applies the structure gate as the service does: a gate no silhouette passes rejects them all
    if lad.structure_ is not None:
        import shutil

        copy = run.parent / (run.name + "_gate")
        shutil.copytree(run, copy, dirs_exist_ok=True)
        raw = json.loads((copy / "ladder.json").read_text())
        raw["structure_gate"]["features"]["fill"] = [0.0, 0.0]  # no silhouette has an empty fill
        (copy / "ladder.json").write_text(json.dumps(raw))
        shut = run_ladder_report(copy, split="test")
        assert shut["id"]["coverage"] == 0.0 and shut["id"]["reasons"] == {"no-structure": n_val}


def test_settle_waits_for_a_quiet_load_and_gives_up(monkeypatch):
    """The benchmark waits for the 1-min load to fall to half the CPUs before a block (its own previous block keeps
    the load up), and never longer than asked."""
    from stillroom.deploy import latency

    loads = iter([3.0, 2.5, 0.4])
    monkeypatch.setattr(latency.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    monkeypatch.setattr(latency.os, "cpu_count", lambda: 2)
    slept = []
    monkeypatch.setattr(latency.time, "sleep", lambda s: slept.append(s))
    assert latency._settle(60.0, poll=5.0) >= 0 and len(slept) == 2  # two busy readings, then quiet
    monkeypatch.setattr(latency.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(latency.time, "perf_counter", lambda: float(next(clock)))
    assert 30.0 <= latency._settle(30.0) <= 40.0  # still busy: gives up after max_seconds (one poll late at most)
    assert latency._settle(0.0) == 0.0  # 0 = do not wait
