"""ONNX export of a trained run, the parity check against PyTorch, and int8 static quantization.

``export_onnx(run)`` writes beside the run::

    RUN/export/model.onnx           fp32, fixed batch 1 (what the service runs: one upload, one image)
    RUN/export/model_dynamic.onnx   fp32, dynamic batch (batched scoring, benchmarks at batch 64)
    RUN/export/model_int8.onnx      int8 QDQ, dynamic batch (optional), calibrated on training images
    RUN/export/model_features.onnx  fp32, dynamic batch, outputs ``logits`` and ``features`` (``export_features_onnx``)
    RUN/export/export.json          files + sha256, input contract, parity and int8 checks, per-runtime record

The graph is the model only: input ``input`` float32 (B, C, S, S) already normalized with the recipe's mean/std
(recorded in export.json), output ``logits`` (B, K). Preprocessing stays in Python, identical to training.

Parity (fail above ``atol``, default 1e-3): PyTorch fp32 vs ONNX Runtime on real validation images of the run's
index: max and mean absolute logit difference and top-1 agreement, for each fp32 file.

int8 (issue 15), ``int8_method``:

- ``nncf`` (the default when the ``int8`` extra is installed): NNCF post-training quantization of the fp32 file
  (``quantize_int8_nncf``): preset ``performance`` (symmetric int8, per-channel weights, per-tensor activations),
  NNCF's quantizer placement, and full bias correction (``fast_bias_correction=False``), calibrated on up to
  ``calib_samples`` (300) training images, evenly spaced over the train split, never val/test; then NNCF's
  accuracy control on up to ``control_samples`` (5000) training images (``int8_accuracy_control``), which returns
  the most harmful quantizers to fp32 while int8's agreement with fp32's argmax there drops by more than
  ``int8_max_drop`` (``int8_control_metric="agreement"``, the default since issue 15's measurements: top-1 on
  labelled training images, the earlier default, let gains and losses cancel and passed three of five students
  that then lost 1.5-2.3 points of val top-1; BENCHMARKS.md "int8 on trained students").
  On a MobileNetV3-Small trained with CE for 24 epochs on the cross-view split (val top-1 85.0%, test 53.3%) it
  kept top-1 (85.3% / 53.6%), where ONNX Runtime's quantizer below gave 36.6% / 24.0%, NNCF with fast bias
  correction 72.5% / 45.4%, NNCF's ``mixed`` preset (asymmetric activations, full bias correction)
  84.6% / 52.2%, and fast bias correction while ignoring the SE gates and their multiplies 71.1% / 45.0%; on a KD
  student (resnet18 teacher, same recipe: 85.0% / 59.5%) 85.3% / 60.0%, against 42.9% / 29.6% with ``ort``.
  Per-tensor activation ranges shift each layer's output mean on MobileNetV3, and bias correction is what undoes
  that; accuracy control turned a fast-bias-correction model (72.5% val) into 85.0% / 52.3% by returning two
  quantizers to fp32. Top-1 is kept, single predictions are not: int8 agrees with fp32 on 93-94% of val and
  88-89% of test images, with logit differences up to about 10 (mean 0.37).
  On the six cross-view sweep students (mobilenet_v3_small, ``ce_scratch`` and ``kd_r18``, seeds 0-2; val 273
  images, test 2704) int8 minus fp32 top-1 was, val / test in points: CE +0.4 / +0.3, +0.7 / -1.3, +0.7 / -1.3;
  KD -0.7 / -0.3, 0.0 / -0.1, -1.5 / -0.2 (this one fails the val gate: 4 images). The two CE test drops are
  real (exact McNemar p = 0.01 and < 0.001), the others are not distinguishable from 0; ``ort`` lost 3-48 points
  of val top-1 on the same students. Test is the other view of each species (back frames), calibration and
  accuracy control see front frames only; global min/max activation ranges instead of NNCF's default did not
  help consistently (CE seed 2 test -1.7, CE seed 0 val -1.1).
  The file is QDQ and runs in ONNX Runtime, but NNCF places the quantizers on the inputs of Conv (after
  HardSwish / ReLU), the layout OpenVINO fuses; ONNX Runtime turns only DQ -> Conv -> Q groups into int8 kernels,
  so in its optimized graph 45 of MobileNetV3-Small's 52 Convs stay fp32 on dequantized tensors (7 QLinearConv,
  101 DequantizeLinear left; the ``ort`` file: 52 QLinearConv) and the file runs several times slower than fp32
  there (``backends`` in export.json and ``benchmarks/bench_backends.py``). NNCF leaves the SE blocks' 1x1 convs
  in fp32, so the file is about half the fp32 size, not a quarter.
  ``int8_fp32_stem``: NNCF's ignored scope holds the stem (``stem_nodes``: the first Conv and the Convs its
  activation feeds), which accuracy control otherwise leaves quantized at its input; on the demo KD student the
  strictest setting then lost 0.72 / 0.54 points (val / test) instead of 0.36 / 1.62.
- ``qat``: quantization-aware fine-tuning in PyTorch (``stillroom.deploy.qat``: torch.ao FX graph mode, BN folded,
  activation ranges calibrated on training images and frozen, stem fp32, self-distilled from the fp32 model on the
  run's augmentation for ``int8_qat_epochs``), exported as QDQ; the same check and gates below. Demo KD student:
  0.00 / 0.36 points (val / test).
- ``ort``: ``onnxruntime.quantization.quantize_static`` in QDQ format, per-channel int8 weights, uint8
  activations, MinMax calibration, from the rewritten model below (fast in ONNX Runtime, inaccurate on
  MobileNetV3).

The check (``int8_check`` in export.json): top-1 of int8 vs fp32 (both in ONNX Runtime) on the ID rows of val and
of test (``splits``), with logit differences and top-1 agreement; the top-level fields are the val ones. ``ok``
when the val drop is at most ``int8_max_drop`` (0.01 = 1 pt): val is the gate, test is reported (``ok_test``)
and never used to decide. A K+1 model (OOD sink) is also gated on its detector: ``int8_check.sink`` holds the
sink AUROC and FPR@95TPR (score ``1 - p_sink``, val ID vs val OOD rows, and test) of fp32 and int8, and ``ok``
needs the val AUROC drop to be at most ``int8_max_auroc_drop`` (0.01). A failed int8 check is recorded, not raised:
the service refuses an int8 model whose check failed.

``ort`` int8 is quantized from a rewritten copy of the model (``int8_source_model``, same function), because ONNX
Runtime (1.32, 2-core Xeon with AVX512-VNNI) ran MobileNetV3 blocks outside its fast int8 kernels (issue 6):

- MLAS's int8 depthwise kernel needs a channel count that is a multiple of 16; MobileNetV3-Large has 72, 120, 184
  and 200 (MobileNetV3-Small 72, 88, 120), which took a generic path 2-3x slower. Those blocks are zero-padded
  (expand conv + BN, depthwise conv + BN, SE, project conv) to the next multiple of 16; the padded channels are
  exactly 0 and never reach the output.
- Squeeze-excitation gates are ``hardsigmoid(fc2(.))``; HardSigmoid has no int8 kernel, so each gate ran as
  DequantizeLinear -> HardSigmoid -> QuantizeLinear in fp32. ``hardsigmoid(v) = clip(v / 6 + 1 / 2, 0, 1)``, so the
  affine part is folded into fc2 and the gate becomes a Clip, which the quantizer folds into fc2's output range.

Measured on MobileNetV3-Large at 128 px, 2 threads, interleaved in one process: int8 batch 64 76 ms instead of
93 ms (fp32 85 ms), batch 1 1.85 ms instead of 1.93 ms (fp32 1.83 ms): int8 now matches fp32 at batch 1 and beats it
at batch 64. The rewrites leave int8 top-1 unchanged within noise against the unrewritten int8 model on five trained
MobileNetV3-Small students (val + test rows), but static int8 itself loses 0.5-32 points against fp32 on some of
them (a LumiNet student: 45.2% -> 12%, with MinMax, percentile 99.99, entropy, no per-channel, or convs alone),
which the int8 check records; per-tensor activation ranges look like the cause (equalization / QAT not tried).
Two further rewrites made int8 faster still (batch 1 about 1.75 ms, batch 64 about 56 ms) but were dropped because
they moved int8 top-1 by 1-7 points on three of those students: requantizing HardSwish's HardSigmoid
(``DQ -> HardSigmoid -> Q`` as one uint8 requantization, biased by a fraction of a step) and keeping the 1-channel
stem conv in fp32 (MLAS's int8 dense conv wants input channels in multiples of 4).
The fp32 files are plain exports (the rewrites do not make fp32 faster: NCHWc kernels pad channels to 16 anyway).

Exporter: the TorchScript-based ``torch.onnx.export(dynamo=False)``, opset 17. The dynamo exporter needs
``onnxscript``, which is not a dependency; the choice is recorded in export.json.

Why one module of over 400 lines: export, fp32 parity and both int8 paths (NNCF, ONNX Runtime) with their accuracy
gates write one ``export.json`` record.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader
from torch import nn

from stillroom import __version__
from stillroom._io import StillroomError, atomic_write_bytes, atomic_write_json, sha256_file
from stillroom.data.dataset import load_images
from stillroom.data.index import DatasetIndex
from stillroom.deploy._ort import (
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    export_model_onnx,
    normalize_uint8,
    ort_logits,
    ort_session,
)
from stillroom.deploy.backends import sink_check
from stillroom.evaluate.feature_ood import pool_features, split_model
from stillroom.models.inference import predict_logits
from stillroom.runs import Run, split_rows

__all__ = [
    "export_onnx",
    "export_features_onnx",
    "FEATURES_FILE",
    "int8_check_summary",
    "export_model_onnx",
    "export_int8",
    "int8_source_model",
    "quantize_int8",
    "quantize_int8_nncf",
    "resolve_int8_method",
    "INT8_METHODS",
    "TrainImagesReader",
    "onnx_parity",
    "EXPORT_DIR",
]

EXPORT_DIR = "export"
FORMAT = "stillroom-export/1"
DW_CHANNEL_MULTIPLE = 16  # MLAS int8 depthwise kernel: channel count multiple of 16 (x86), else a generic path
INT8_METHODS = ("auto", "nncf", "ort", "qat")  # auto: nncf when installed (the `int8` extra), else ort
CONTROL_METRICS = ("top1", "agreement")  # NNCF accuracy control: top-1 on labelled train images, or fp32 agreement
NNCF_PRESET = "performance"  # symmetric int8 weights (per channel) and activations (per tensor)
#: most rounds of NNCF accuracy control (rank the remaining quantizer groups, return the worst to fp32);
#: the CLI option repeats the number
CONTROL_ITERATIONS = 30


class TrainImagesReader(CalibrationDataReader):
    """Calibration batches for ``quantize_static``: ``images[rows]`` (uint8), normalized like training."""

    def __init__(self, images: np.ndarray, rows: np.ndarray, mean: Any, std: Any, batch_size: int = 16) -> None:
        self.images, self.rows, self.mean, self.std = images, np.asarray(rows), mean, std
        self.batch_size, self.pos = int(batch_size), 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.rows):
            return None
        chunk = self.rows[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return {INPUT_NAME: normalize_uint8(np.asarray(self.images[chunk]), self.mean, self.std)}

    def rewind(self) -> None:
        self.pos = 0


def _pad_conv(conv: nn.Conv2d, extra_in: int, extra_out: int) -> nn.Conv2d:
    """``conv`` with ``extra_in`` / ``extra_out`` zero channels appended (a depthwise conv stays depthwise)."""
    depthwise = conv.groups > 1
    if depthwise and (conv.groups != conv.in_channels or extra_in != extra_out):
        raise ValueError("only depthwise convs (groups == channels) can be padded when grouped")
    new = nn.Conv2d(
        conv.in_channels + extra_in, conv.out_channels + extra_out, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups + extra_out if depthwise else 1, conv.bias is not None, conv.padding_mode,
    )  # fmt: skip
    with torch.no_grad():
        new.weight.zero_()
        new.weight[: conv.out_channels, : conv.weight.shape[1]] = conv.weight
        if conv.bias is not None:
            new.bias.zero_()
            new.bias[: conv.out_channels] = conv.bias
    return new


def _pad_bn(bn: nn.BatchNorm2d, extra: int) -> nn.BatchNorm2d:
    """``bn`` with ``extra`` channels that map 0 to 0 (weight 1, bias 0, mean 0, var 1)."""
    new = nn.BatchNorm2d(bn.num_features + extra, eps=bn.eps, momentum=bn.momentum)
    with torch.no_grad():
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            t = getattr(new, name)
            t.fill_(fill)
            t[: bn.num_features] = getattr(bn, name)
    return new


def int8_source_model(model: nn.Module) -> tuple[nn.Module, dict[str, int]]:
    """An eval-mode copy of ``model`` computing the same function, laid out for ONNX Runtime's int8 kernels.

    For torchvision MobileNetV3 blocks: depthwise channel counts padded to a multiple of 16 with zero channels, and
    squeeze-excitation ``hardsigmoid(fc2(.))`` rewritten as ``clip(fc2'(.), 0, 1)`` with fc2' = fc2 / 6 + 1/2. Other
    architectures come back unchanged (a copy). Returns the copy and the counts of the two rewrites.
    """
    from torchvision.models.mobilenetv3 import InvertedResidual
    from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation

    model = copy.deepcopy(model).eval().cpu()
    counts = {"depthwise_padded": 0, "se_gates_folded": 0}
    for block in model.modules():
        if not isinstance(block, InvertedResidual):
            continue
        layers = list(block.block)
        convs = [m for m in layers if isinstance(m, Conv2dNormActivation)]
        if len(convs) < 3 or not isinstance(convs[1][1], nn.BatchNorm2d):  # no expand conv: input channels fixed
            continue
        expand, dw, project = convs[0], convs[1], convs[-1]
        c = dw[0].out_channels
        extra = -c % DW_CHANNEL_MULTIPLE
        if extra == 0 or dw[0].groups != c or expand[0].groups != 1 or not isinstance(expand[1], nn.BatchNorm2d):
            continue
        expand[0], expand[1] = _pad_conv(expand[0], 0, extra), _pad_bn(expand[1], extra).eval()
        dw[0], dw[1] = _pad_conv(dw[0], extra, extra), _pad_bn(dw[1], extra).eval()
        for se in layers:
            if isinstance(se, SqueezeExcitation):  # gate of a zero channel: anything times 0
                se.fc1, se.fc2 = _pad_conv(se.fc1, extra, 0), _pad_conv(se.fc2, 0, extra)
        project[0] = _pad_conv(project[0], extra, 0)
        counts["depthwise_padded"] += 1
    for se in model.modules():
        if isinstance(se, SqueezeExcitation) and type(se.scale_activation) is nn.Hardsigmoid:
            with torch.no_grad():  # torch's hardsigmoid(v) = clip(v / 6 + 1/2, 0, 1)
                se.fc2.weight.div_(6.0)
                se.fc2.bias.copy_(se.fc2.bias / 6.0 + 0.5)
            se.scale_activation = nn.Hardtanh(0.0, 1.0)  # exported as Clip(0, 1)
            counts["se_gates_folded"] += 1
    return model.eval(), counts


def quantize_int8(src: str | Path, dst: str | Path, reader: CalibrationDataReader) -> str:
    """Static int8 quantization (QDQ, per-channel weights, MinMax calibration) of ``src`` into ``dst``; sha256."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    pre = dst.with_name(f".{dst.stem}.pre.onnx")
    tmp = dst.with_name(f".{dst.stem}.tmp.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )  # fmt: skip
        atomic_write_bytes(dst, tmp.read_bytes())
    except StillroomError:
        raise
    except Exception as err:  # onnxruntime.quantization raises plain exceptions of many kinds
        raise StillroomError(f"{src}: int8 quantization failed ({type(err).__name__}: {err})") from None
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
        for extra in dst.parent.glob("augmented_model*.onnx"):  # calibrator leftovers in older onnxruntime
            extra.unlink(missing_ok=True)
    return sha256_file(dst)


def resolve_int8_method(method: str) -> str:
    """``"nncf"`` or ``"ort"`` for ``method`` (``"auto"``: nncf when it is installed, else ONNX Runtime's own)."""
    if method not in INT8_METHODS:
        raise StillroomError(f"unknown int8 method {method!r}; known: {', '.join(INT8_METHODS)}")
    have_nncf = importlib.util.find_spec("nncf") is not None
    if method == "nncf" and not have_nncf:
        raise StillroomError('int8 method nncf needs the nncf package: pip install -c constraints.txt -e ".[int8]"')
    if method == "auto":
        return "nncf" if have_nncf else "ort"
    return method


def quantize_int8_nncf(
    src: str | Path,
    dst: str | Path,
    calib: np.ndarray,
    fast_bias_correction: bool = False,
    control: tuple[np.ndarray, np.ndarray, int] | None = None,
    max_drop: float = 0.01,
    max_iterations: int = CONTROL_ITERATIONS,
    control_metric: str = "top1",
    fp32_stem: bool = False,
) -> dict[str, Any]:
    """NNCF post-training int8 quantization of the ONNX file ``src`` into ``dst`` (QDQ, runs in ONNX Runtime).

    ``calib``: float32 (N, C, S, S) normalized training images, one calibration sample each (N = NNCF's
    ``subset_size``). Preset ``performance`` (symmetric int8, per-channel weights, per-tensor activations), NNCF's
    own quantizer placement for the CPU, and ``fast_bias_correction=False``: NNCF's full bias correction, which
    re-estimates every quantized layer's bias from the statistics of the quantized model so far. On trained
    MobileNetV3-Small students it is what keeps top-1 (the fast variant lost about 13 points of val top-1 on a
    CE student, ONNX Runtime's MinMax quantizer about 48; see the module docstring).

    ``control = (x, labels, k)``: labelled *training* images (never val/test) for
    ``nncf.quantize_with_accuracy_control``: when int8 top-1 on them (argmax over the first ``k`` outputs) drops
    by more than ``max_drop`` against fp32, NNCF ranks the quantizers by their effect and returns the most harmful
    ones to fp32, one at a time (at most ``max_iterations``), until the drop is within ``max_drop``; otherwise the
    result is the plain post-training one. ``control_metric="agreement"``: the metric is instead the share of
    control images whose int8 argmax over all outputs (a K+1 model's sink included) equals the fp32 one, ``labels``
    and ``k`` are ignored, and unlabelled images will do. Top-1 on training images hides flips that cancel out (a
    K+1 student: 11% of val predictions changed, train top-1 -0.3 points, val -2.3), agreement does not.
    Returns the settings and the sha256 of ``dst``.
    """
    import nncf
    import onnx

    if len(calib) == 0:
        raise StillroomError(f"{src}: int8 calibration needs at least one training image")
    dst = Path(dst)
    model = onnx.load(str(src))
    dataset = nncf.Dataset(range(len(calib)), lambda i: {INPUT_NAME: np.ascontiguousarray(calib[i : i + 1])})
    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.ERROR)  # NNCF logs each ignored node and statistics pass at INFO
    info: dict[str, Any] = {}
    common: dict[str, Any] = {"preset": nncf.QuantizationPreset(NNCF_PRESET), "subset_size": len(calib)}
    if fp32_stem:
        stem = stem_nodes(model)
        common["ignored_scope"] = nncf.IgnoredScope(names=stem)
        info["fp32_stem"] = stem
    control_top1: dict[str, float] = {}
    if control_metric not in CONTROL_METRICS:
        raise StillroomError(f"unknown int8 control metric {control_metric!r}; known: {', '.join(CONTROL_METRICS)}")

    def control_logits(candidate: Any, x: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.log_severity_level = 1, 3
        sess = ort.InferenceSession(candidate.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return ort_logits(sess, x, 64)

    if control is not None and control_metric == "agreement":  # the fp32 model's own answers are the labels
        fp32_answers = control_logits(model, control[0]).argmax(1)
        control = (control[0], fp32_answers, None)

    def top1_on_control(candidate: Any, items: Any) -> tuple[float, list[float]]:
        rows = np.fromiter(items, dtype=np.int64)
        x, labels, k = control
        logits = control_logits(candidate, x[rows])
        logits = logits if k is None else logits[:, :k]
        hits = (logits.argmax(1) == labels[rows]).astype(np.float64)
        return float(hits.mean()) if len(hits) else 0.0, hits.tolist()

    def run(fast: bool) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if control is None:
                return nncf.quantize(model, dataset, fast_bias_correction=fast, **common)
            from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

            return nncf.quantize_with_accuracy_control(
                model, dataset, nncf.Dataset(range(len(control[0]))), top1_on_control, max_drop=max_drop,
                drop_type=nncf.DropType.ABSOLUTE, fast_bias_correction=fast,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    max_num_iterations=max_iterations, num_ranking_workers=1
                ),
                **common,
            )  # fmt: skip

    try:
        try:
            quantized = run(fast_bias_correction)
        except Exception as err:
            if fast_bias_correction:
                raise
            # Full bias correction runs sub-graphs in ONNX Runtime; on ResNets ORT 1.32's Conv+Add fusion drops an
            # intermediate output NNCF asks for ("Failed to find node output ..."). Fall back to the fast
            # variant (recorded); the accuracy check below decides whether the result may be served.
            info["full_bias_correction_error"] = f"{type(err).__name__}: {str(err)[:300]}"
            fast_bias_correction = True
            quantized = run(True)
        if control is not None:
            everything = range(len(control[0]))
            control_top1 = {
                "fp32": top1_on_control(model, everything)[0],
                "int8": top1_on_control(quantized, everything)[0],
            }
    except Exception as err:  # NNCF raises many kinds (nncf.InternalError, ValueError, onnx errors)
        raise StillroomError(f"{src}: NNCF int8 quantization failed ({type(err).__name__}: {err})") from None
    finally:
        nncf.set_log_level(level or logging.WARNING)
    atomic_write_bytes(dst, quantized.SerializeToString())
    if control is not None:
        info["accuracy_control"] = {
            "split": "train",
            "n": int(len(control[0])),
            "metric": "top-1" if control_metric == "top1" else "agreement with fp32 (argmax, all outputs)",
            "max_drop": max_drop,
            "max_iterations": max_iterations,
            "top1_fp32": control_top1["fp32"],
            "top1_int8": control_top1["int8"],
            "quantizers": _count_ops(quantized, "QuantizeLinear"),
        }
    return {
        "sha256": sha256_file(dst),
        "method": "nncf",
        "nncf": nncf.__version__,
        "preset": NNCF_PRESET,
        "fast_bias_correction": bool(fast_bias_correction),
        "subset_size": int(len(calib)),
        **info,
    }


def stem_nodes(model: Any) -> list[str]:
    """Names of the stem's nodes in an ONNX graph: the first Conv, and every Conv its output reaches through
    single-input elementwise ops (the stem's activation). Kept fp32 by ``fp32_stem`` (issue 15): the stem's output on
    a binary silhouette is a per-channel constant over the whole background, so its rounding error is a constant
    shift of every following feature map. On the ``make demo`` KD student (torch FX fake quantization, min/max
    ranges, no bias correction, 1,000 training images) int8 agreed with fp32's argmax on 69% of them; leaving that
    one tensor (the stem's HardSwish output) in fp32 gave 90%, the stem's conv output and HardSwish output both
    97%; no other single activation moved it by more than one point."""
    first = next((n for n in model.graph.node if n.op_type == "Conv"), None)
    if first is None:
        return []
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names, frontier = [first.name], list(first.output)
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.op_type == "Conv":
                names.append(node.name)
            elif node.op_type in _STEM_PASS_THROUGH:
                frontier.extend(node.output)
    return names


_STEM_PASS_THROUGH = frozenset(
    {"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Mul", "MaxPool", "BatchNormalization"}
)


def _count_ops(model: Any, op_type: str) -> int:
    return sum(n.op_type == op_type for n in model.graph.node)


def export_int8(
    model: nn.Module, path: str | Path, input_shape: tuple[int, ...], dynamic: bool, reader: CalibrationDataReader
) -> dict[str, Any]:
    """``model`` -> ``int8_source_model`` -> ONNX (temporary, beside ``path``) -> ``quantize_int8`` -> ``path``.

    Returns ``{"sha256", "depthwise_padded", "se_gates_folded"}`` (the rewrite counts of ``int8_source_model``).
    """
    path = Path(path)
    src_model, counts = int8_source_model(model)
    src = path.with_name(f".{path.stem}.src.onnx")
    try:
        export_model_onnx(src_model, src, input_shape, dynamic=dynamic)
        sha = quantize_int8(src, path, reader)
    finally:
        src.unlink(missing_ok=True)
    return {"sha256": sha, **counts}


def onnx_parity(ref_logits: np.ndarray, onnx_logits: np.ndarray) -> dict[str, Any]:
    """Max/mean absolute logit difference and top-1 agreement of two (N, K) logit arrays."""
    if ref_logits.shape != onnx_logits.shape:
        raise StillroomError(f"parity: shapes differ, {ref_logits.shape} vs {onnx_logits.shape}")
    diff = np.abs(ref_logits.astype(np.float64) - onnx_logits.astype(np.float64))
    return {
        "n": int(len(ref_logits)),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "top1_agreement": float((ref_logits.argmax(1) == onnx_logits.argmax(1)).mean()) if diff.size else 1.0,
    }


def _spread(rows: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` rows, evenly spaced (deterministic, covers every class of a class-sorted split)."""
    if len(rows) <= n:
        return rows
    return rows[np.linspace(0, len(rows) - 1, n).round().astype(np.int64)]


def _top1(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    return float((logits[:, :k].argmax(1) == labels).mean()) if len(labels) else float("nan")


def export_onnx(
    run_dir: str | Path,
    weights: str = "best",
    dynamic: bool = True,
    int8: bool = False,
    index: DatasetIndex | str | Path | None = None,
    atol: float = 1e-3,
    parity_samples: int = 256,
    calib_samples: int = 300,
    int8_max_drop: float = 0.01,
    int8_max_auroc_drop: float = 0.01,
    int8_method: str = "auto",
    int8_accuracy_control: bool = True,
    control_samples: int = 5000,
    int8_control_drop: float | None = None,
    int8_control_metric: str = "agreement",
    int8_control_iterations: int = CONTROL_ITERATIONS,
    int8_fp32_stem: bool = False,
    int8_qat_epochs: float = 4.0,
    int8_qat_lr: float = 1e-4,
    backends: bool = True,
    backend_timing: float = 1.0,
    threads: int = 2,
) -> dict[str, Any]:
    """Export the run's ``weights`` to ONNX, check parity on validation images, optionally quantize to int8.

    ``int8_method``: ``nncf`` (NNCF post-training quantization with full bias correction), ``ort`` (ONNX
    Runtime's static quantizer on the rewritten model) or ``auto`` (nncf when installed). ``nncf`` with
    ``int8_accuracy_control``: NNCF's accuracy control on up to ``control_samples`` labelled training images
    (never val/test) returns quantizers to fp32 while int8 top-1 there drops by more than ``int8_control_drop``
    (default: ``int8_max_drop``), at most ``int8_control_iterations`` rounds of ranking and reverting (each round
    re-ranks every remaining quantizer group on the control images: the bulk of the export's time when int8 misses
    the bar). ``backends``: also record, per installed runtime (ONNX Runtime, OpenVINO),
    parity, int8 top-1 and a ``backend_timing``-second timing per row, and the fastest that passes (``backends`` in
    export.json; 0 s skips the timing).
    Writes ``RUN/export/export.json`` (also when parity fails, with ``"ok": false``) and returns its content.
    Raises ``StillroomError`` when the fp32 parity exceeds ``atol``.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    the_run = Run(run_dir)
    run = the_run.load(weights, device="cpu")  # the exporter traces on CPU inputs
    meta = run.meta
    idx = the_run.index(index)
    images = load_images(idx)
    sink, k_id = the_run.layout.sink, the_run.layout.num_id
    shape = (int(meta["in_chans"]), int(meta["img_size"]), int(meta["img_size"]))
    mean, std = run.normalizer.mean.flatten().tolist(), run.normalizer.std.flatten().tolist()
    out_dir = run_dir / EXPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)

    val_rows = idx.split_indices("val")
    if len(val_rows) == 0:
        raise StillroomError(f"{idx.root}: the val split is empty; parity needs real validation images")
    files: dict[str, dict[str, Any]] = {"fp32": {"file": "model.onnx", "batch": 1}}
    files["fp32"]["sha256"] = export_model_onnx(run.model, out_dir / "model.onnx", shape, dynamic=False)
    if dynamic:
        files["fp32_dynamic"] = {"file": "model_dynamic.onnx", "batch": "dynamic"}
        files["fp32_dynamic"]["sha256"] = export_model_onnx(run.model, out_dir / "model_dynamic.onnx", shape, True)
    else:
        (out_dir / "model_dynamic.onnx").unlink(missing_ok=True)

    prow = _spread(val_rows, parity_samples)
    ref = predict_logits(run.model, run.normalizer, images, prow)
    x = normalize_uint8(np.asarray(images[prow]), mean, std)
    parity: dict[str, Any] = {"split": "val", "atol": atol}
    for key, entry in files.items():
        sess = ort_session(out_dir / entry["file"], threads=threads)
        parity[key] = onnx_parity(ref, ort_logits(sess, x, None if entry["batch"] == 1 else 64))
    parity["ok"] = all(parity[k]["max_abs_diff"] <= atol for k in files)

    report: dict[str, Any] = {
        "format": FORMAT,
        "run": str(run_dir),
        "arch": meta["arch"],
        "weights": {"name": weights, "file": run.weights_path.name, "sha256": run.weights_sha256},
        "index": str(idx.root),
        "index_hash": idx.index_hash,
        "input": {"name": INPUT_NAME, "shape": ["B", *shape], "dtype": "float32", "mean": mean, "std": std},
        "output": {"name": OUTPUT_NAME, "num_classes": int(meta["num_classes"]), "sink_class": sink},
        "classes": list(meta["classes"]),
        "exporter": {"kind": "torchscript", "opset": OPSET, "torch": torch.__version__},
        "versions": _versions(),
        "models": files,
        "parity": parity,
    }
    if not parity["ok"]:
        report["ok"] = False
        atomic_write_json(out_dir / "export.json", report)
        worst = max((parity[k]["max_abs_diff"], k) for k in files)
        raise StillroomError(
            f"{run_dir}: ONNX parity failed: max |logit diff| {worst[0]:.3g} ({files[worst[1]]['file']}) > {atol:g}"
        )
    report["features"] = export_features_onnx(run.model, out_dir, shape, x, atol=atol, threads=threads)

    (out_dir / "model_int8.onnx").unlink(missing_ok=True)
    fp32_top1: dict[str, float] = {}
    evals: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if int8:
        method = resolve_int8_method(int8_method)
        train_all = idx.split_indices("train")
        train_rows = _spread(train_all, calib_samples)
        if len(train_rows) == 0:
            raise StillroomError(f"{idx.root}: the train split is empty; int8 calibration needs training images")
        src = out_dir / ("model_dynamic.onnx" if dynamic else "model.onnx")
        dst = out_dir / "model_int8.onnx"
        if method == "nncf":
            xcal = normalize_uint8(np.asarray(images[train_rows]), mean, std)
            control = None
            if int8_accuracy_control:
                # top-1 needs labelled ID rows; agreement takes every training row, a K+1 model's OOD rows too
                pool = split_rows(idx, "train", sink)[0] if int8_control_metric == "top1" else train_all
                crows = _spread(pool, control_samples)
                control = (normalize_uint8(np.asarray(images[crows]), mean, std), idx.labels[crows], k_id)
            control_drop = int8_max_drop if int8_control_drop is None else int8_control_drop
            qinfo = quantize_int8_nncf(
                src,
                dst,
                xcal,
                control=control,
                max_drop=control_drop,
                max_iterations=int8_control_iterations,
                control_metric=int8_control_metric,
                fp32_stem=int8_fp32_stem,
            )
            calibration = {"split": "train", "n": int(len(train_rows)), "method": "nncf", "format": "QDQ"}
        elif method == "qat":
            from stillroom.data.augment import get_augment
            from stillroom.deploy.qat import quantize_int8_qat

            cfg = the_run.config
            qinfo = quantize_int8_qat(
                run.model, dst, images, train_all, mean, std, get_augment(cfg.augment if cfg else "auto", idx.recipe),
                shape, dynamic=dynamic, seed=the_run.seed, epochs=int8_qat_epochs, lr=int8_qat_lr,
            )  # fmt: skip
            calibration = {**qinfo["calibration"], "method": "qat", "format": "QDQ"}
        else:
            reader = TrainImagesReader(images, train_rows, mean, std, batch_size=16 if dynamic else 1)
            # Quantized from a rewritten copy of the model (same function, int8-kernel-friendly: module docstring);
            # the check below compares it with the plain fp32 file.
            qinfo = {**export_int8(run.model, dst, shape, dynamic, reader), "method": "ort"}
            calibration = {"split": "train", "n": int(len(train_rows)), "method": "minmax", "format": "QDQ"}
        files["int8"] = {"file": "model_int8.onnx", "batch": "dynamic" if dynamic else 1, "sha256": qinfo["sha256"]}
        check, fp32_top1, evals = _int8_check(idx, images, sink, k_id, mean, std, src, dst, dynamic, threads)
        val = check["splits"]["val"]
        report["int8_check"] = {
            # val: the gate (the service serves int8 only when ok); test: reported, never used to decide anything
            "split": "val",
            "method": qinfo["method"],
            "quantizer": {k: v for k, v in qinfo.items() if k not in ("sha256", "depthwise_padded", "se_gates_folded")},
            "calibration": calibration,
            "rewrites": {k: qinfo[k] for k in ("depthwise_padded", "se_gates_folded") if k in qinfo},
            "top1_fp32": val["top1_fp32"],
            "top1_int8": val["top1_int8"],
            "top1_drop": val["top1_drop"],
            "max_drop": int8_max_drop,
            **{k: val[k] for k in ("n", "max_abs_diff", "mean_abs_diff", "top1_agreement")},
            "splits": check["splits"],
            "ok_test": (
                None
                if "test" not in check["splits"]
                else bool(check["splits"]["test"]["top1_drop"] <= int8_max_drop + 1e-12)
            ),
            "ok": bool(val["top1_drop"] <= int8_max_drop + 1e-12),
        }
        if "sink" in val:  # a K+1 model: the sink's AUROC is gated like top-1 (val decides, test is reported)
            gate = {"max_auroc_drop": int8_max_auroc_drop}
            for split, rec in check["splits"].items():
                gate[f"ok_{split}"] = bool(rec["sink"]["auroc_drop"] <= int8_max_auroc_drop + 1e-12)
            report["int8_check"]["sink"] = {**val["sink"], **gate}
            report["int8_check"]["ok"] = bool(report["int8_check"]["ok"] and gate["ok_val"])
    if backends:
        from stillroom.deploy.backends import backend_report

        report["backends"] = backend_report(
            out_dir, files, ref.astype(np.float64), x, evals, k_id, fp32_top1, atol, int8_max_drop, threads=threads,
            timing_seconds=backend_timing, max_auroc_drop=int8_max_auroc_drop,
        )  # fmt: skip
    report["ok"] = True
    report["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out_dir / "export.json", report)
    return report


FEATURES_FILE = "model_features.onnx"
FEATURES_NAME = "features"


class _LogitsAndFeatures(nn.Module):
    """``x -> (logits, features)`` with ``features`` the pooled penultimate features exactly as evaluation's KNN
    takes them: ``evaluate.feature_ood.split_model``'s backbone, global average pool, flatten (B, D)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._backbone, self._head = split_model(model)  # ValueError when the model has no cut (e.g. a ViT)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self._backbone(x)  # (B, C, h, w)
        return self._head(maps), pool_features(maps)  # (B, K), (B, C)


def export_features_onnx(
    model: nn.Module,
    out_dir: str | Path,
    input_shape: tuple[int, ...],
    x_parity: np.ndarray,
    atol: float = 1e-3,
    threads: int = 2,
) -> dict[str, Any]:
    """Write ``out_dir/model_features.onnx`` (fp32, dynamic batch; outputs ``logits`` (B, K) and ``features``
    (B, D)) for the ladder's knn signal (``deploy.knn``), and check both outputs against PyTorch on the normalized
    float32 images ``x_parity`` (the fp32 parity images). ``model.onnx`` stays logits only.

    Returns the export.json ``features`` record: file, sha256, outputs, feature dimension, parity (max / mean
    absolute difference of each output, top-1 agreement) and ``ok`` (both max differences <= ``atol``; the service
    refuses a knn ladder on a file that is not ok). A model without a backbone/head cut, or whose backbone is not a
    4-D feature map, gets ``{"skipped": reason}`` and no file (an older file is removed).
    """

    out_dir = Path(out_dir)
    path = out_dir / FEATURES_FILE
    model = model.eval().cpu()
    try:
        wrapped = _LogitsAndFeatures(model).eval()
        with torch.no_grad():
            maps = wrapped._backbone(torch.zeros((1, *input_shape), dtype=torch.float32))
        if maps.ndim != 4:
            raise ValueError(f"{type(model).__name__}: its features are not a 4-D feature map ({list(maps.shape)})")
    except ValueError as err:
        path.unlink(missing_ok=True)
        return {"skipped": str(err)}
    sha = export_model_onnx(wrapped, path, input_shape, dynamic=True, output_names=(OUTPUT_NAME, FEATURES_NAME))
    with torch.no_grad():
        ref = [wrapped(torch.from_numpy(x_parity[i : i + 64])) for i in range(0, len(x_parity), 64)]
    ref_z = torch.cat([r[0] for r in ref]).numpy()
    ref_f = torch.cat([r[1] for r in ref]).numpy()
    sess = ort_session(path, threads=threads)
    got = [sess.run(None, {INPUT_NAME: x_parity[i : i + 64]}) for i in range(0, len(x_parity), 64)]
    got_z = np.concatenate([g[0] for g in got])
    got_f = np.concatenate([g[1] for g in got])
    diff_f = np.abs(ref_f.astype(np.float64) - got_f.astype(np.float64))
    parity = {
        "split": "val",
        "atol": atol,
        "logits": onnx_parity(ref_z, got_z),
        "features": {
            "n": int(len(ref_f)),
            "max_abs_diff": float(diff_f.max()) if diff_f.size else 0.0,
            "mean_abs_diff": float(diff_f.mean()) if diff_f.size else 0.0,
        },
    }
    parity["ok"] = bool(parity["logits"]["max_abs_diff"] <= atol and parity["features"]["max_abs_diff"] <= atol)
    return {
        "file": FEATURES_FILE,
        "sha256": sha,
        "batch": "dynamic",
        "outputs": [OUTPUT_NAME, FEATURES_NAME],
        "feature_dim": int(ref_f.shape[1]),
        "features": "evaluate.feature_ood.split_model backbone, global average pool, flatten (KNN's features)",
        "parity": parity,
        "ok": parity["ok"],
    }


def _int8_check(
    idx: DatasetIndex,
    images: np.ndarray,
    sink: int | None,
    k_id: int,
    mean: Any,
    std: Any,
    fp32_file: Path,
    int8_file: Path,
    dynamic: bool,
    threads: int,
) -> tuple[dict[str, Any], dict[str, float], dict[str, tuple[np.ndarray, np.ndarray, Any]]]:
    """int8 vs fp32 (both in ONNX Runtime) on the ID rows of val and test: top-1 of each, the drop, logit
    differences and top-1 agreement; for a K+1 model also the sink check on the split's OOD rows. Returns
    (``{"splits": {...}}``, fp32 top-1 per split, per split (ID inputs, labels, None or (fp32 ID logits, fp32 OOD
    logits, OOD inputs)) for the per-runtime check)."""
    bs = 64 if dynamic else None
    fp_sess, q_sess = ort_session(fp32_file, threads=threads), ort_session(int8_file, threads=threads)
    splits: dict[str, Any] = {}
    fp32_top1: dict[str, float] = {}
    evals: dict[str, tuple[np.ndarray, np.ndarray, Any]] = {}
    sink_ref: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for split in ("val", "test"):
        rows, ood_rows = split_rows(idx, split, sink)
        if len(rows) == 0:
            continue
        x = normalize_uint8(np.asarray(images[rows]), mean, std)
        labels = idx.labels[rows]
        fp, q = ort_logits(fp_sess, x, bs), ort_logits(q_sess, x, bs)
        acc_fp, acc_q = _top1(fp, labels, k_id), _top1(q, labels, k_id)
        splits[split] = {"top1_fp32": acc_fp, "top1_int8": acc_q, "top1_drop": acc_fp - acc_q, **onnx_parity(fp, q)}
        if sink is not None and len(ood_rows):
            # the sink is the K+1 model's OOD detector: int8 must keep its AUROC too (issue 15: within 0.01)
            xo = normalize_uint8(np.asarray(images[ood_rows]), mean, std)
            fo, qo = ort_logits(fp_sess, xo, bs), ort_logits(q_sess, xo, bs)
            splits[split]["sink"] = sink_check(fp, fo, q, qo)
            sink_ref[split] = (fp, fo, xo)
        fp32_top1[split] = acc_fp
        evals[split] = (x, labels, sink_ref.get(split))
    return {"splits": splits}, fp32_top1, evals


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    out = {"stillroom": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    for name in ("nncf", "openvino"):
        if importlib.util.find_spec(name) is not None:
            out[name] = _module_version(name) or "?"
    return out


def _module_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def int8_check_summary(chk: dict[str, Any]) -> str:
    """One line of an export.json ``int8_check``: top-1 fp32 vs int8 per split (older files: val only)."""
    return "; ".join(
        f"{split} {100 * r['top1_fp32']:.2f}% fp32 vs {100 * r['top1_int8']:.2f}% int8"
        for split, r in chk.get("splits", {"val": chk}).items()
    )
