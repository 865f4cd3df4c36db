"""int8 by quantization-aware fine-tuning (issue 15, ``--int8-method qat``): the fake-quantized model, its QDQ
export that ONNX Runtime runs, and the same int8 check and gate as the other methods."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from _deploy import link_run, ort_top1_by_split  # noqa: E402
from stillroom._io import StillroomError, sha256_file  # noqa: E402
from stillroom.data.augment import get_augment  # noqa: E402
from stillroom.deploy import qat  # noqa: E402
from stillroom.deploy._ort import normalize_uint8, ort_logits, ort_session  # noqa: E402
from stillroom.deploy.onnx_export import export_onnx  # noqa: E402
from stillroom.models.factory import create_model  # noqa: E402


@pytest.fixture(scope="module")
def run(shapes_index, tiny_config, tmp_path_factory):
    """A mobilenet_v3_small trained briefly on the shapes (no export)."""
    from stillroom.config import config_from_dict
    from stillroom.pipeline import train

    raw = tiny_config(shapes_index.root, "mnv3q", model="mobilenet_v3_small", epochs=3)
    return train(config_from_dict(raw), tmp_path_factory.mktemp("qat") / "mnv3q")


def _model(arch: str = "mobilenet_v3_small") -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(arch, 1, 5, 32).train()
    with torch.no_grad():  # O(1) BatchNorm statistics, as a trained net has
        for _ in range(3):
            model(torch.randn(8, 1, 32, 32))
    return model.eval()


def _masks(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, (n, 1, 32, 32), dtype=np.uint8) * 255


def test_stem_quantizers_are_off_and_the_rest_on():
    """MobileNetV3: the stem conv's output and its HardSwish output are the two quantizers left off; ResNet: the
    fused conv-ReLU output (max pooling shares its input's quantizer). Every other activation quantizer
    fake-quantizes."""
    import torch.ao.quantization as tq

    x = torch.from_numpy(normalize_uint8(_masks(16), [0.5], [0.5]))
    for arch, n_stem in (("mobilenet_v3_small", 2), ("resnet18", 1)):
        gm, stem = qat.prepare_qat_model(_model(arch), x[:2], x)
        fq = {n: m for n, m in gm.named_modules() if isinstance(m, tq.FakeQuantizeBase)}
        assert len(stem) == n_stem and set(stem) <= set(fq), (arch, stem)
        for name, mod in fq.items():
            assert bool(mod.fake_quant_enabled) == (name not in stem), name
            assert not bool(mod.observer_enabled)  # ranges frozen after calibration
        _, none = qat.prepare_qat_model(_model(arch), x[:2], x, fp32_stem=False)
        assert none == []


def test_qat_file_is_qdq_and_onnx_runtime_matches_the_fake_quantized_model(tmp_path):
    """The exported file holds QuantizeLinear/DequantizeLinear pairs, is not the fp32 model, and ONNX Runtime's
    logits track fp32's."""
    import onnx

    model = _model()
    images = _masks(40)
    rows = np.arange(32)
    info = qat.quantize_int8_qat(
        model, tmp_path / "q.onnx", images, rows, [0.5], [0.5], get_augment("silhouette", {}), (1, 32, 32),
        epochs=1, batch_size=16, calib=16,
    )  # fmt: skip
    assert info["sha256"] == sha256_file(tmp_path / "q.onnx") and info["method"] == "qat" and info["steps"] == 2
    assert info["calibration"]["n"] == 16 and len(info["fp32_stem"]) == 2 and np.isfinite(info["final_loss"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert ops.count("QuantizeLinear") == info["quantizers"] > 20 and ops.count("DequantizeLinear") > 20
    x = normalize_uint8(images[32:], [0.5], [0.5])
    got = ort_logits(ort_session(tmp_path / "q.onnx", threads=1), x, 8)
    with torch.no_grad():
        fp = model(torch.from_numpy(x)).numpy()
    assert got.shape == fp.shape and np.isfinite(got).all() and np.abs(got - fp).max() > 0  # quantized
    assert np.corrcoef(got.ravel(), fp.ravel())[0, 1] > 0.9  # and still tracks fp32, not garbage
    with pytest.raises(StillroomError, match="train split is empty"):
        qat.quantize_int8_qat(model, tmp_path / "e.onnx", images, rows[:0], [0.5], [0.5], None, (1, 32, 32))
    with pytest.raises(StillroomError, match="must be positive"):
        qat.quantize_int8_qat(model, tmp_path / "e.onnx", images, rows, [0.5], [0.5], None, (1, 32, 32), epochs=0)


def test_export_qat_goes_through_the_int8_check(run, tmp_path):
    """``export_onnx(int8_method="qat")`` writes model_int8.onnx, records the method and the quantizer settings,
    and its val/test top-1 equal an independent recomputation from the files on disk."""
    copy = link_run(run, tmp_path / "q")
    rep = export_onnx(copy, int8=True, int8_method="qat", int8_qat_epochs=1, backends=False)
    chk = rep["int8_check"]
    assert chk["method"] == "qat" and chk["quantizer"]["method"] == "qat" and chk["quantizer"]["epochs"] == 1
    assert chk["calibration"]["split"] == "train" and chk["calibration"]["method"] == "qat"
    assert rep["models"]["int8"]["sha256"] == sha256_file(copy / "export" / "model_int8.onnx")
    for split, (n, acc_fp, acc_q) in ort_top1_by_split(copy / "export", rep).items():
        rec = chk["splits"][split]
        assert rec["n"] == n
        assert rec["top1_fp32"] == pytest.approx(acc_fp) and rec["top1_int8"] == pytest.approx(acc_q)
    assert chk["ok"] == (chk["splits"]["val"]["top1_drop"] <= chk["max_drop"] + 1e-12)
    assert json.loads((copy / "export" / "export.json").read_text())["int8_check"] == chk


def test_qat_failing_bar_fails_through_the_cli(run, tmp_path):
    """An impossible bar (a val gain of 100 points) fails the check, the CLI says so; bad QAT options are refused."""
    import typer
    from typer.testing import CliRunner

    from stillroom.cli.deploy import register

    app = typer.Typer()
    register(app)
    copy = link_run(run, tmp_path / "f")
    args = ["export", str(copy), "--int8", "--int8-method", "qat", "--int8-qat-epochs", "0.5", "--no-backends"]
    res = CliRunner().invoke(app, [*args, "--int8-max-drop", "-1", "--no-ladder"])
    assert res.exit_code == 0, res.output
    chk = json.loads((copy / "export" / "export.json").read_text())["int8_check"]
    assert chk["method"] == "qat" and chk["ok"] is False and "FAILED" in res.output
    res = CliRunner().invoke(app, [*args, "--int8-qat-lr", "0", "--no-ladder"])
    assert isinstance(res.exception, StillroomError) and "--int8-qat-lr" in str(res.exception)
