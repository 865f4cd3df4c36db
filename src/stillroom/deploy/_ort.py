"""Private helpers shared by export, QAT, benchmarks and the service: the one ONNX file writer
(``export_model_onnx``), numpy normalization identical to ``Normalizer`` and ONNX Runtime sessions with an explicit
thread count. (A run's index, class layout and rows: ``stillroom.runs``.)"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stillroom._io import StillroomError, atomic_write_bytes, sha256_file

__all__ = ["INPUT_NAME", "OPSET", "OUTPUT_NAME", "export_model_onnx", "normalize_uint8", "ort_session", "ort_logits"]

INPUT_NAME, OUTPUT_NAME = "input", "logits"
OPSET = 17


def export_model_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, ...],
    dynamic: bool,
    output_names: tuple[str, ...] = (OUTPUT_NAME,),
) -> str:
    """Export ``model`` (eval mode, CPU) to ``path`` atomically; ``input_shape`` = (C, S, S); ``output_names``: one
    per output of the model. Returns the sha256."""
    import onnx

    model = model.eval().cpu()
    x = torch.zeros((1, *input_shape), dtype=torch.float32)
    buf = io.BytesIO()
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *output_names)} if dynamic else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, on every call
        torch.onnx.export(
            model, (x,), buf, dynamo=False, input_names=[INPUT_NAME], output_names=list(output_names),
            opset_version=OPSET, dynamic_axes=axes, do_constant_folding=True,
        )  # fmt: skip
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, buf.getvalue())
    return sha256_file(path)


def normalize_uint8(x: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """uint8 (B, C, S, S) -> float32 ``(x / 255 - mean) / std``, the same float32 operations as ``Normalizer``."""
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((np.asarray(x).astype(np.float32) / np.float32(255.0) - mean) / std).astype(np.float32, copy=False)


def ort_session(path: str | Path, threads: int | None = None):
    """CPU InferenceSession with ``threads`` intra-op threads (None: ORT's default), sequential execution."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # warnings about unused initializers etc. are noise here
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types (InvalidGraph, NoSuchFile...)
        raise StillroomError(f"{path}: onnxruntime cannot load it ({err})") from None


def ort_logits(session, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Run ``session`` over float32 (N, C, S, S) ``x`` in chunks of ``batch_size`` (None: the model's fixed batch,
    else everything at once); returns (N, K) float32."""
    inp = session.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    bs = fixed or batch_size or max(len(x), 1)
    if fixed and batch_size and batch_size != fixed:
        raise StillroomError(f"model has a fixed batch of {fixed}, asked for {batch_size}")
    out = [session.run(None, {inp.name: x[i : i + bs]})[0] for i in range(0, len(x), bs)]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, 0), np.float32)
