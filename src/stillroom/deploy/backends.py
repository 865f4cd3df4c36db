"""CPU inference backends for exported ONNX files: ONNX Runtime (always) and OpenVINO (optional extra).

``make_runner(backend, path, threads)`` returns a callable ``x -> logits`` for a float32 (B, C, S, S) batch;
``runner_logits`` runs it over many images in chunks (a fixed-batch file gets its own batch size).
``backend_report`` is what ``stillroom export`` records in export.json under ``backends``: for each backend that
is installed, whether it loads the files, fp32 parity with PyTorch (max |logit difference| <= ``atol``), int8
top-1 against fp32, and a short batch-1 / batch-64 timing; then which backend is fastest among those that pass.

OpenVINO (``pip install -c constraints.txt -e ".[openvino]"``) reads the same ONNX files; it is compiled with
``INFERENCE_PRECISION_HINT=f32`` (its CPU plug-in would otherwise run fp32 models in bf16 on CPUs that have it,
which breaks the 1e-3 parity), ``INFERENCE_NUM_THREADS`` and the latency hint (one stream). A file it refuses to
compile is recorded as such (``compiles: false`` with the error), never raised.

The timings in export.json are short (about a second per row) and carry the load average they were taken under;
``benchmarks/bench_backends.py`` is the real measurement.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import StillroomError
from stillroom._timing import time_calls  # re-exported: the one timing loop (also used by evaluate.tradeoff)
from stillroom.deploy._ort import ort_session

__all__ = [
    "BACKENDS",
    "available_backends",
    "backend_version",
    "make_runner",
    "runner_logits",
    "backend_report",
    "serving_backend",
    "sink_check",
    "SERVE_BACKENDS",
    "time_calls",
]

BACKENDS = ("onnxruntime", "openvino")
SERVE_BACKENDS = ("auto", *BACKENDS)  # auto: the fastest at batch 1 that passed export's checks (serving_backend)
Runner = Callable[[np.ndarray], np.ndarray]


def available_backends() -> list[str]:
    """The backends importable here (ONNX Runtime is a dependency; OpenVINO is the ``openvino`` extra)."""
    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


def backend_version(backend: str) -> str | None:
    if importlib.util.find_spec(backend) is None:
        return None
    if backend == "openvino":
        import openvino

        return str(openvino.get_version()).split("-")[0]
    import onnxruntime

    return str(onnxruntime.__version__)


def _fixed_batch(shape: list[Any]) -> int | None:
    return shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None


def make_runner(
    backend: str, path: str | Path, threads: int | None = 2, all_outputs: bool = False
) -> tuple[Runner, int | None]:
    """(callable ``x -> logits`` for ``path`` on ``backend``, the file's fixed batch or None); ``all_outputs``: the
    callable returns every output of the graph, in order (``model_features.onnx``: logits, features).
    ``StillroomError`` when the backend is not installed or cannot load / compile the file."""
    if backend == "onnxruntime":
        sess = ort_session(path, threads=threads)
        inp = sess.get_inputs()[0]
        if all_outputs:
            return (lambda x: sess.run(None, {inp.name: x})), _fixed_batch(list(inp.shape))
        return (lambda x: sess.run(None, {inp.name: x})[0]), _fixed_batch(list(inp.shape))
    if backend == "openvino":
        if importlib.util.find_spec("openvino") is None:
            raise StillroomError('openvino is not installed (pip install -c constraints.txt -e ".[openvino]")')
        import openvino as ov

        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as err:  # openvino raises RuntimeError / its own types for unsupported graphs
            raise StillroomError(f"{path}: OpenVINO cannot compile it ({str(err).strip()[:300]})") from None
        request = compiled.create_infer_request()
        pshape = compiled.inputs[0].get_partial_shape()
        fixed = pshape[0].get_length() if pshape.rank.is_static and pshape[0].is_static else None

        def run(x: np.ndarray) -> Any:
            out = request.infer({0: x})
            if all_outputs:
                return [np.array(out[o], copy=True) for o in compiled.outputs]
            return np.array(out[0], copy=True)

        return run, fixed
    raise StillroomError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")


def runner_logits(runner: Runner, fixed: int | None, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run ``runner`` over float32 (N, C, S, S) ``x`` in chunks (the file's fixed batch, else ``batch_size``)."""
    bs = fixed or batch_size
    out = [runner(np.ascontiguousarray(x[i : i + bs])) for i in range(0, len(x), bs)]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, 0), np.float32)


def _median_ms(fn: Callable[[], Any], seconds: float) -> dict[str, Any]:
    times = time_calls(fn, warmup=2, repeats=10**6, max_seconds=seconds, min_runs=3, warmup_seconds=seconds / 2)
    return {"median_ms": round(float(np.median(times)) * 1e3, 4), "runs": int(len(times))}


def sink_check(fp_id: np.ndarray, fp_ood: np.ndarray, q_id: np.ndarray, q_ood: np.ndarray) -> dict[str, Any]:
    """Sink AUROC and FPR@95TPR (score ``1 - p_sink``, ID rows positive) of fp32 and int8 logits, and the drop."""
    import torch

    from stillroom.evaluate.ood import ood_metrics, sink_score

    def metrics(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        s_id, s_ood = (sink_score(torch.from_numpy(v.astype(np.float32))).numpy() for v in (a, b))
        return ood_metrics(s_id, s_ood)

    mf, mq = metrics(fp_id, fp_ood), metrics(q_id, q_ood)
    return {
        "n_id": int(len(fp_id)),
        "n_ood": int(len(fp_ood)),
        "auroc_fp32": mf["auroc"],
        "auroc_int8": mq["auroc"],
        "auroc_drop": mf["auroc"] - mq["auroc"],
        "fpr_at_95_tpr_fp32": mf["fpr_at_95_tpr"],
        "fpr_at_95_tpr_int8": mq["fpr_at_95_tpr"],
    }


def backend_report(
    out_dir: Path,
    files: dict[str, dict[str, Any]],
    ref_logits: np.ndarray,
    x_parity: np.ndarray,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    k_id: int,
    fp32_top1: dict[str, float],
    atol: float,
    max_drop: float,
    threads: int = 2,
    timing_seconds: float = 1.0,
    backends: list[str] | None = None,
    max_auroc_drop: float = 0.01,
) -> dict[str, Any]:
    """Per backend: fp32 parity with PyTorch (``ref_logits`` on ``x_parity``), int8 top-1 per split of ``splits``
    (``{split: (x, labels, sink)}``) against ``fp32_top1`` (ONNX Runtime fp32, which matches PyTorch); for a K+1
    model (``sink`` = (fp32 ID logits, fp32 OOD logits, OOD inputs)) also the sink AUROC of this runtime's int8
    logits against fp32's, gated by ``max_auroc_drop`` on val like the export's own check; and batch-1 /
    batch-64 medians (``timing_seconds`` per row; 0 skips timing). ``fastest`` names, per batch, the quickest
    (backend, model) among those that pass: fp32 parity <= ``atol``, int8 drop on val <= ``max_drop``."""
    backends = available_backends() if backends is None else backends
    report: dict[str, Any] = {
        "threads": threads,
        "timing_seconds_per_row": timing_seconds,
        "load_before": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    rng = np.random.default_rng(0)
    x_time = {b: x_parity[rng.integers(0, len(x_parity), b)] for b in (1, 64)} if len(x_parity) else {}
    candidates: list[tuple[int, float, str, str]] = []
    for backend in BACKENDS:
        if backend not in backends:
            report[backend] = {"available": False}
            continue
        entry: dict[str, Any] = {"available": True, "version": backend_version(backend)}
        for model in ("fp32", "int8"):
            if model not in files:
                continue
            rec: dict[str, Any] = {}
            by_batch = {1: files[model]["file"], 64: files[model]["file"]}
            if model == "fp32" and "fp32_dynamic" in files:
                by_batch[64] = files["fp32_dynamic"]["file"]
            runners: dict[str, tuple[Runner, int | None]] = {}
            try:
                for name in sorted(set(by_batch.values())):
                    runners[name] = make_runner(backend, out_dir / name, threads)
            except StillroomError as err:
                entry[model] = {"compiles": False, "error": str(err), "ok": False}
                continue
            rec["compiles"] = True
            if model == "fp32":
                worst = 0.0
                for name, (run, fixed) in runners.items():
                    diff = np.abs(runner_logits(run, fixed, x_parity).astype(np.float64) - ref_logits)
                    rec.setdefault("parity", {})[name] = {"max_abs_diff": float(diff.max()) if diff.size else 0.0}
                    worst = max(worst, float(diff.max()) if diff.size else 0.0)
                rec["ok"] = bool(worst <= atol)
            else:
                run, fixed = runners[by_batch[1]]
                top1 = {}
                for split, (x, labels, sink) in splits.items():
                    logits = runner_logits(run, fixed, x)
                    top1[split] = float((logits[:, :k_id].argmax(1) == labels).mean()) if len(labels) else None
                    if sink is not None:
                        fp_id, fp_ood, x_ood = sink
                        rec.setdefault("sink", {})[split] = sink_check(
                            fp_id, fp_ood, logits, runner_logits(run, fixed, x_ood)
                        )
                rec["top1"] = top1
                rec["top1_drop"] = {
                    s: (fp32_top1[s] - v if v is not None and fp32_top1.get(s) is not None else None)
                    for s, v in top1.items()
                }
                drop = rec["top1_drop"].get("val")
                rec["ok"] = bool(drop is not None and drop <= max_drop + 1e-12)
                if "val" in rec.get("sink", {}):
                    rec["ok"] = rec["ok"] and bool(rec["sink"]["val"]["auroc_drop"] <= max_auroc_drop + 1e-12)
            if timing_seconds > 0 and x_time:
                lat = {}
                for b, name in by_batch.items():
                    run, fixed = runners[name]
                    if fixed not in (None, b):
                        continue
                    xb = np.ascontiguousarray(x_time[b])
                    lat[str(b)] = _median_ms(lambda run=run, xb=xb: run(xb), timing_seconds)
                    if rec["ok"]:
                        candidates.append((b, lat[str(b)]["median_ms"], backend, model))
                rec["latency"] = lat
            entry[model] = rec
        report[backend] = entry
    report["load_after"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    fastest: dict[str, Any] = {}
    for b in (1, 64):
        rows = sorted((c for c in candidates if c[0] == b), key=lambda c: c[1])
        if rows:
            fastest[str(b)] = {"backend": rows[0][2], "model": rows[0][3], "median_ms": rows[0][1]}
    report["fastest"] = fastest
    report["note"] = (
        "short timings (about timing_seconds_per_row each) under the recorded load; "
        "benchmarks/bench_backends.py is the measurement"
    )
    return report


def serving_backend(export: dict[str, Any], model: str, backend: str = "auto") -> dict[str, Any]:
    """Which runtime serves ``model`` ("fp32" or "int8") of an export, and why: ``{"backend", "reason",
    "export_median_ms"}``.

    ``backend="auto"`` picks the backend with the lowest batch-1 median in export.json's ``backends`` record among
    those that passed the export's checks for that model (fp32: parity with PyTorch <= atol; int8: the top-1 gate
    on val) and are installed here; with no usable timing it falls back to ONNX Runtime (a dependency) and says so.
    A named backend is checked the same way: ``StillroomError`` when it is unknown, not installed, or failed (or
    was never checked) for that model, since its logits would then not be the ones the export vouched for.
    """
    rec = export.get("backends") or {}
    here = available_backends()

    def passed(name: str) -> dict[str, Any] | None:
        entry = (rec.get(name) or {}).get(model)
        return entry if isinstance(entry, dict) and entry.get("ok") else None

    if backend != "auto":
        if backend not in BACKENDS:
            raise StillroomError(f"unknown backend {backend!r}; known: {', '.join(SERVE_BACKENDS)}")
        if backend not in here:
            raise StillroomError(f"backend {backend} is not installed here")
        if backend != "onnxruntime" and passed(backend) is None:
            raise StillroomError(
                f"export.json has no passing {model} check for {backend}; export again with it installed "
                "(`stillroom export RUN --backends`) or serve with onnxruntime"
            )
        ms = ((passed(backend) or {}).get("latency") or {}).get("1", {}).get("median_ms")
        return {"backend": backend, "reason": "named", "export_median_ms": ms}
    timed = []
    for name in BACKENDS:
        entry = passed(name)
        ms = ((entry or {}).get("latency") or {}).get("1", {}).get("median_ms")
        if name in here and entry is not None and ms is not None:
            timed.append((float(ms), name))
    if not timed:
        return {
            "backend": "onnxruntime",
            "reason": f"no batch-1 timing of a passing {model} backend in export.json; ONNX Runtime by default",
            "export_median_ms": None,
        }
    ms, name = min(timed)
    others = ", ".join(f"{n} {m:.3f} ms" for m, n in sorted(timed) if n != name)
    return {
        "backend": name,
        "reason": f"fastest passing {model} backend at batch 1 in export.json ({ms:.3f} ms"
        + (f"; {others})" if others else ")"),
        "export_median_ms": ms,
    }
