"""Quantization-aware fine-tuning of a trained student, exported as a QDQ ONNX file (issue 15, ``--int8-method qat``).

PyTorch's FX graph mode quantization (``torch.ao.quantization``) does the quantization: it inserts fake-quantize
modules (per-channel symmetric int8 weights, per-tensor uint8 activations, the x86 qconfig mapping's fixed ranges for
HardSigmoid) and the TorchScript ONNX exporter writes each one as a QuantizeLinear / DequantizeLinear pair, which
ONNX Runtime fuses into int8 kernels. Nothing here computes a scale or rounds a value by hand.

The recipe (the ablations behind each step are exploratory runs on the ``make demo`` KD student, kept in the issue
15 notes, not in BENCHMARKS.md):

1. BatchNorm is folded into the convolutions first (``torch.fx.experimental.optimization.fuse``): the student is
   fine-tuned from its converged weights for a few epochs only, the regime in which torchvision's QAT recipe freezes
   BN statistics anyway, and a plain Conv exports as DQ -> Conv -> Q, which ONNX Runtime runs as one int8 kernel.
2. Activation ranges are calibrated once (torch's moving-average min/max observer over batches of 64 of ``calib``
   evenly spaced training images, fake quantization off) and then frozen; only the weights are trained. Letting the
   observers follow the augmented training batches changed fewer of val's predictions back to fp32's answer.
3. The stem stays fp32 (``fp32_stem``): the fake quantizers on the first convolution's output and on its
   activation, up to the next convolution's input, are switched off. On a binary silhouette the stem's output is a
   per-channel constant over the whole background, so its rounding error shifts every later feature map; it was by
   far the most harmful single quantizer on the demo student (``onnx_export.stem_nodes`` says the same for NNCF).
4. Fine-tuning distils the fp32 model into its quantized copy (KL divergence of the softmaxes at temperature 1,
   self-distillation: the target is the fp32 model's own answer, which is what the int8 check compares against,
   and K+1 models' OOD training rows are used like any other), on every training row with the run's own
   augmentation, SGD with momentum 0.9 and a cosine schedule, lr 1e-4, 4 epochs, batch 64.

Measured with ``benchmarks/int8_students.py --setting qat`` (BENCHMARKS.md "int8 on trained students"): on the demo
KD student (mobilenet_v3_small, 64 px) val 84.56% -> 84.56%, test 84.38% -> 84.02% (NNCF's strictest accuracy
control: test -1.62 points). OpenVINO 2026.4 cannot compile the file (its MatMul transformation rejects the
classifier's DequantizeLinear), which export.json records; ONNX Runtime, the served runtime, runs it.
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stillroom._io import StillroomError
from stillroom.data.augment import Augment, augment_batch, augment_rng
from stillroom.deploy._ort import export_model_onnx, normalize_uint8

__all__ = ["QAT_DEFAULTS", "prepare_qat_model", "quantize_int8_qat"]

QAT_DEFAULTS: dict[str, Any] = {"epochs": 4.0, "lr": 1e-4, "batch_size": 64, "calib": 512, "temperature": 1.0}
# modules a stem's output passes through unchanged in kind on its way to the next convolution
_STEM_PASS_THROUGH = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.MaxPool2d, nn.Identity)


def _qconfig_mapping() -> Any:
    """x86 QAT mapping with one qconfig for every op: per-channel symmetric int8 weights (-128..127), per-tensor
    affine uint8 activations over the full 0..255 range (x86's default reduces it to 0..127 for an fbgemm overflow
    that ONNX Runtime's kernels do not have). The mapping's fixed-range entries (HardSigmoid, Sigmoid) are kept."""
    import torch.ao.quantization as tq

    act = tq.FakeQuantize.with_args(
        observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
        qscheme=torch.per_tensor_affine,
    )  # fmt: skip
    weight = tq.FakeQuantize.with_args(
        observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric, ch_axis=0,
    )  # fmt: skip
    qconfig = tq.QConfig(activation=act, weight=weight)
    mapping = tq.get_default_qat_qconfig_mapping("x86").set_global(qconfig)
    for key, val in list(mapping.object_type_qconfigs.items()):
        if val is not None and "Fused" in repr(val.activation):  # the learned-range default: same qconfig as global
            mapping.set_object_type(key, qconfig)
    return mapping


def _stem_quantizers(gm: torch.fx.GraphModule) -> list[str]:
    """Names of the activation fake quantizers between the first convolution and the next ones (its output, its
    activation's output), found by walking the prepared graph."""
    import torch.ao.quantization as tq

    mods = dict(gm.named_modules())

    def is_conv(node: torch.fx.Node) -> bool:
        return node.op == "call_module" and isinstance(mods[str(node.target)], nn.modules.conv._ConvNd)

    first = next((n for n in gm.graph.nodes if is_conv(n)), None)
    if first is None:
        return []
    names: list[str] = []
    frontier = list(first.users)
    while frontier:
        node = frontier.pop()
        mod = mods.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(mod, tq.FakeQuantizeBase):
            names.append(str(node.target))
        elif not isinstance(mod, _STEM_PASS_THROUGH):
            continue  # a convolution (the stem ends) or anything else: stop here
        frontier.extend(node.users)
    return names


def prepare_qat_model(model: nn.Module, example: torch.Tensor, calib: torch.Tensor, fp32_stem: bool = True) -> Any:
    """The fake-quantized copy of ``model`` (eval mode, float32 CPU), BN folded, activation ranges calibrated on the
    normalized float32 batch ``calib`` and frozen, the stem's quantizers off when ``fp32_stem``. Returns
    ``(graph_module, stem_quantizer_names)``."""
    import torch.ao.quantization as tq
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    from torch.fx.experimental.optimization import fuse as fold_bn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's migration notice, on every call
        try:
            folded = fold_bn(copy.deepcopy(model).cpu().float().eval())
            gm = prepare_qat_fx(folded.train(), _qconfig_mapping(), (example,))
        except Exception as err:  # torch.fx raises TraceError, TypeError, ... on untraceable models
            msg = f"{type(model).__name__}: QAT cannot trace the model ({type(err).__name__}: {err})"
            raise StillroomError(msg) from None
    gm.eval()
    gm.apply(tq.disable_fake_quant)
    gm.apply(tq.enable_observer)
    with torch.no_grad():
        for i in range(0, len(calib), 64):
            gm(calib[i : i + 64])
    gm.apply(tq.disable_observer)  # ranges stay as calibrated (module docstring, step 2)
    gm.apply(tq.enable_fake_quant)
    stem = _stem_quantizers(gm) if fp32_stem else []
    mods = dict(gm.named_modules())
    for name in stem:
        mods[name].disable_fake_quant()
    return gm, stem


def quantize_int8_qat(
    model: nn.Module,
    dst: str | Path,
    images: np.ndarray,
    train_rows: np.ndarray,
    mean: Any,
    std: Any,
    augment: Augment,
    input_shape: tuple[int, ...],
    dynamic: bool = True,
    seed: int = 0,
    epochs: float = QAT_DEFAULTS["epochs"],
    lr: float = QAT_DEFAULTS["lr"],
    batch_size: int = QAT_DEFAULTS["batch_size"],
    calib: int = QAT_DEFAULTS["calib"],
    temperature: float = QAT_DEFAULTS["temperature"],
    fp32_stem: bool = True,
) -> dict[str, Any]:
    """Fine-tune a fake-quantized copy of the fp32 ``model`` on ``images[train_rows]`` (uint8, training rows only)
    distilled from ``model`` itself, and write it to ``dst`` as a QDQ ONNX file (``input_shape`` = (C, S, S)).
    ``augment`` is the run's training augmentation, applied with ``augment_rng(seed, row, epoch)``. Returns the
    settings, the final training loss, ``quantizers`` (QuantizeLinear nodes in the file, the weights' included:
    on mobilenet_v3_small 108 on activations + 54 on weights; NNCF's count is activations only) and the sha256.
    ``model`` is not changed.
    """
    import onnx
    import torch.ao.quantization as tq

    if len(train_rows) == 0:
        raise StillroomError("QAT needs training images; the train split is empty")
    if epochs <= 0 or lr <= 0 or batch_size < 1:
        raise StillroomError(f"QAT: epochs ({epochs}), lr ({lr}) and batch size ({batch_size}) must be positive")
    t0 = time.perf_counter()
    teacher = model.eval()
    train_rows = np.asarray(train_rows)

    def norm(u8: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(normalize_uint8(u8, mean, std))

    crows = train_rows[np.linspace(0, len(train_rows) - 1, min(calib, len(train_rows))).round().astype(np.int64)]
    torch.manual_seed(seed)
    gm, stem = prepare_qat_model(model, torch.zeros((2, *input_shape)), norm(np.asarray(images[crows])), fp32_stem)
    params = [p for p in gm.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    per_epoch = max(len(train_rows) // batch_size, 1)
    steps = max(int(round(epochs * per_epoch)), 1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rng = np.random.default_rng(seed)
    gm.train()  # fake quantization stays on, observers stay off (prepare_qat_model)
    step, epoch, losses = 0, 0, []
    while step < steps:
        order = rng.permutation(train_rows)
        for b in range(per_epoch):
            if step >= steps:
                break
            rows = order[b * batch_size : (b + 1) * batch_size]
            raw = torch.from_numpy(np.array(images[rows]))
            x = norm(augment_batch(augment, raw, [augment_rng(seed, int(r), epoch) for r in rows]).numpy())
            with torch.no_grad():
                target = F.softmax(teacher(x) / temperature, 1)
            loss = F.kl_div(F.log_softmax(gm(x) / temperature, 1), target, reduction="batchmean") * temperature**2
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
        epoch += 1
    gm.eval()
    gm.apply(tq.disable_observer)
    sha = export_model_onnx(gm, dst, input_shape, dynamic=dynamic)
    proto = onnx.load(str(dst))
    return {
        "sha256": sha,
        "method": "qat",
        "torch": torch.__version__,
        "framework": "torch.ao.quantization FX graph mode (prepare_qat_fx), TorchScript ONNX export (QDQ)",
        "qconfig": "x86 mapping; weights per-channel symmetric int8, activations per-tensor affine uint8 0..255",
        "bn": "folded before QAT",
        "epochs": float(epochs),
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "temperature": temperature,
        "loss": "KL(fp32 || int8) on the run's augmentation, every training row",
        "calibration": {
            "split": "train",
            "n": int(len(crows)),
            "observer": "moving-average min/max, frozen after calibration",
        },
        "fp32_stem": stem,
        "final_loss": float(np.mean(losses[-max(per_epoch // 4, 1) :])),
        "quantizers": sum(n.op_type == "QuantizeLinear" for n in proto.graph.node),
        "seconds": round(time.perf_counter() - t0, 2),
    }
