"""Latency and throughput of a student: PyTorch eager vs ONNX Runtime and OpenVINO, fp32 and int8, batch 1 and 64.

Method: each (backend, batch) pair gets its own warm-up (``warmup`` calls and at least ``warmup_seconds``, not
timed), then up to ``repeats`` timed calls or ``max_seconds`` of them, whichever comes first (at least
``min_runs``). Each call is timed alone with ``time.perf_counter``; the report gives the median and the 95th
percentile (numpy's linear interpolation) in ms, and throughput = batch / median. Both runtimes get the same thread
count (``torch.set_num_threads``, ``intra_op_num_threads``; ORT inter-op 1); the load average before and after is
recorded, because on a shared machine other jobs inflate the numbers (PyTorch's OpenMP workers are hit hardest:
each parallel region waits for a descheduled worker, so eager latency can grow a hundredfold while ONNX Runtime's
pool degrades gracefully; CPU steal from /proc/stat is recorded too). Inputs are fixed silhouette-like tensors
(values do not change the work).

ORT fp32 batch 1 runs ``model.onnx`` (fixed batch), batch 64 ``model_dynamic.onnx``; int8 runs ``model_int8.onnx``.
OpenVINO (``ov_fp32`` / ``ov_int8``, when the ``openvino`` extra is installed) runs the same files, compiled as in
``stillroom.deploy.backends`` (f32 inference precision, latency hint, the same thread count); a file it cannot
compile is listed under ``skipped`` with the reason. Each row carries the size of the file it ran (``size_bytes``;
eager: the fp32 parameters and buffers).

Issue 6 (MobileNetV3-Large, 1x128x128, ORT fp32 batch 1 <= 0.7 ms on the 2-core VM) is out of reach of this
hardware, not of the export or of the session settings. What was checked (2 intra-op threads unless noted):

- The exported graph is the plain ``torch.onnx.export`` graph: same nodes (62 Conv, 21 HardSwish, 8 HardSigmoid,
  2 Gemm, ...; no normalization, Cast or fp64 inside) as torchvision's 3-channel / 1000-class model exported with
  default settings, which times the same (1.6-2.1 ms) in a fresh default session. Fixed vs dynamic batch, IOBinding
  / OrtValue calls, thread affinity, ORT_ENABLE_ALL vs EXTENDED (EXTENDED 3x slower: no NCHWc kernels), spinning
  off (2.9 ms), 1 vs 2 threads (1 thread 2.4 ms): nothing gets below about 1.5 ms.
- A floor independent of the image size: the same model at 32 px (1/16 of the convolution work) still takes
  0.99 ms. Each call streams about 20 MB of fp32 weights (5.0 M parameters) from L3 at about 20 GB/s per core
  (the classifier alone, 8 MB, takes 0.23 ms), plus about 110 kernel launches. The convolutions add about 1 ms per
  image even at batch 64 (144 MFLOP per image; sgemm peaks at about 280 GFLOP/s on both cores).
- int8 cannot reach 0.4 ms either: even with every fp32 island removed (HardSwish replaced by ReLU, a what-if
  that changes the model) int8 batch 1 took 1.3 ms. Its layout rewrites and its accuracy loss are described in
  ``stillroom.deploy.onnx_export``.

Why one module of over 400 lines: the latency benchmark end to end: models, runtimes, the timing protocol and the
BENCHMARKS.md table writer share one record format.
"""

from __future__ import annotations

import math
import os
import platform
import re
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stillroom._io import StillroomError, atomic_write_text, read_json
from stillroom.deploy._ort import ort_session
from stillroom.deploy.backends import time_calls  # re-exported: the timing loop lives with the runners

__all__ = ["benchmark_latency", "bench_run", "bench_arch", "update_benchmarks_md", "time_calls", "LATENCY_SECTION"]

LATENCY_SECTION = "## Latency (`stillroom bench-latency`)"
BACKENDS = ("eager", "ort_fp32", "ort_int8", "ov_fp32", "ov_int8")
# Latency targets of issue 6 (2 cores): batch-1 median in ms per backend, keyed by (arch, img_size).
TARGETS = {("mobilenet_v3_large", 128): {"ort_fp32": 0.7, "ort_int8": 0.4}}
_LABELS = {
    "eager": "PyTorch eager (fp32)",
    "ort_fp32": "ONNX Runtime fp32",
    "ort_int8": "ONNX Runtime int8 (QDQ)",
    "ov_fp32": "OpenVINO fp32",
    "ov_int8": "OpenVINO int8 (same QDQ file)",
}
_RUNTIME = {"ort_fp32": "onnxruntime", "ort_int8": "onnxruntime", "ov_fp32": "openvino", "ov_int8": "openvino"}
# Untimed warm-up per row, at least: on the 2-core VM the first 1-2 s of ORT batch-1 calls run 10-30% slower
# (medians of 300-call blocks 2.2 -> 1.6 ms over the first 3 s of one session), so 20 calls were not enough.
WARMUP_SECONDS = 2.0


def add_timing_args(parser: Any) -> None:
    """The timing and model-shape options shared by the latency benchmark scripts (``argparse`` parser)."""
    parser.add_argument("--in-chans", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=151)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--warmup-seconds", type=float, default=WARMUP_SECONDS, help="untimed warm-up per row, at least"
    )
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument(
        "--settle-seconds", type=float, default=90.0, help="before each block, wait this long at most for a quiet load"
    )
    parser.add_argument("--md", default="BENCHMARKS.md", help="file to update ('' to skip)")


def _summary(times: np.ndarray, batch: int) -> dict[str, Any]:
    med = float(np.median(times))
    return {
        "median_ms": med * 1e3,
        "p95_ms": float(np.percentile(times, 95)) * 1e3,
        "mean_ms": float(times.mean()) * 1e3,
        "min_ms": float(times.min()) * 1e3,
        "runs": int(len(times)),
        "throughput_img_s": batch / med if med > 0 else math.inf,
    }


def _settle(max_seconds: float, poll: float = 5.0) -> float:
    """Seconds waited (at most ``max_seconds``) until the 1-min load average is at most half the visible CPUs."""
    if max_seconds <= 0 or not hasattr(os, "getloadavg"):
        return 0.0
    limit, start = 0.5 * max(os.cpu_count() or 1, 1), time.perf_counter()
    while os.getloadavg()[0] > limit and time.perf_counter() - start < max_seconds:
        time.sleep(poll)
    return round(time.perf_counter() - start, 1)


def _silhouettes(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` drawn blobs (ellipse + random polygon), preprocessed like real data: (n, size, size) uint8 {0, 255}."""
    from PIL import Image, ImageDraw

    from stillroom.data.preprocess import preprocess_mask

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = Image.new("L", (96, 96), 255)
        d = ImageDraw.Draw(img)
        cx, cy, r = rng.uniform(35, 61, 2).tolist() + [float(rng.uniform(12, 30))]
        d.ellipse([cx - r, cy - r * rng.uniform(0.5, 1), cx + r, cy + r * rng.uniform(0.5, 1)], fill=0)
        d.polygon([tuple(p) for p in rng.uniform(10, 86, (5, 2)).tolist()], fill=0)
        out.append(preprocess_mask(np.asarray(img) < 128, size))
    return np.stack(out)


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        visible = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        visible = os.cpu_count() or 0
    return {"cpu": cpu, "cpus_visible": visible, "platform": platform.platform()}


def _cpu_times() -> list[int] | None:
    """Aggregate /proc/stat CPU counters (user nice system idle iowait irq softirq steal ...), None off Linux."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None


def _steal_pct(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of CPU time the hypervisor gave to other guests while measuring (column 8 of /proc/stat)."""
    if not before or not after or len(before) < 8:
        return None
    delta = [a - b for a, b in zip(after, before, strict=False)]
    total = sum(delta[:8])
    return round(100.0 * delta[7] / total, 2) if total > 0 else None


def benchmark_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    onnx_files: dict[str, dict[str, Path]],
    batch_sizes: Sequence[int] = (1, 64),
    threads: int = 2,
    warmup: int = 20,
    repeats: int = 500,
    max_seconds: float = 10.0,
    backends: Sequence[str] = BACKENDS,
    warmup_seconds: float = WARMUP_SECONDS,
    settle_seconds: float = 0.0,
) -> dict[str, Any]:
    """Time ``model`` eagerly and the ONNX files (``{"ort_fp32": {"fixed": p, "dynamic": p}, "ort_int8": {...}}``;
    the ``ov_*`` backends take the ``ort_*`` files when they have none of their own).

    Returns ``{"threads", "warmup", "repeats", "max_seconds", "machine", "load_before", "load_after",
    "versions", "results": [{"backend", "batch", "file", "size_bytes", "median_ms", "p95_ms", "mean_ms", "min_ms",
    "runs", "throughput_img_s"}], "skipped": [{"backend", "batch", "reason"}]}``. OpenVINO rows are skipped (not
    an error) when openvino is not installed. ``settle_seconds``: first wait, at most that long, for the 1-min load
    average to fall to half the visible CPUs: a benchmark's own previous block keeps the load up for a minute, and
    the load before a block is what says whether its numbers are valid (``settled_after_s`` records the wait).
    """
    import onnxruntime as ort

    from stillroom.deploy.backends import available_backends, backend_version, make_runner

    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise StillroomError(f"unknown backend(s) {unknown}; known: {', '.join(BACKENDS)}")
    if threads < 1 or any(b < 1 for b in batch_sizes):
        raise StillroomError(f"threads and batch sizes must be >= 1, got {threads} and {list(batch_sizes)}")
    shape = tuple(int(s) for s in input_shape)
    masks = _silhouettes(max(batch_sizes), shape[-1])  # (B, S, S) uint8
    x_all = np.repeat((masks[:, None].astype(np.float32) / 255.0 - 0.5) / 0.5, shape[0], axis=1)
    settled = _settle(settle_seconds)
    load_before, cpu_before = os.getloadavg(), _cpu_times()
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    have = set(available_backends())
    eager_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = model.eval()
        for backend in backends:
            for b in batch_sizes:
                x = np.ascontiguousarray(x_all[:b])
                if backend == "eager":
                    xt = torch.from_numpy(x)

                    def call(xt: torch.Tensor = xt) -> Any:
                        with torch.inference_mode():
                            return model(xt)

                    file, size = None, eager_bytes
                else:
                    files = onnx_files.get(backend) or onnx_files.get(backend.replace("ov_", "ort_"), {})
                    path = files.get("fixed") if b == 1 and files.get("fixed") else files.get("dynamic")
                    if path is None:
                        continue
                    if _RUNTIME[backend] not in have:
                        skipped.append({"backend": backend, "batch": int(b), "reason": "openvino not installed"})
                        continue
                    if backend.startswith("ort_"):
                        sess = ort_session(path, threads=threads)
                        feed = {sess.get_inputs()[0].name: x}

                        def call(sess: Any = sess, feed: dict = feed) -> Any:
                            return sess.run(None, feed)

                    else:
                        try:
                            runner, _ = make_runner(_RUNTIME[backend], path, threads=threads)
                        except StillroomError as err:
                            skipped.append({"backend": backend, "batch": int(b), "reason": str(err)})
                            continue

                        def call(runner: Any = runner, x: np.ndarray = x) -> Any:
                            return runner(x)

                    file, size = Path(path).name, Path(path).stat().st_size
                times = time_calls(call, warmup=warmup if b == 1 else max(2, warmup // 10), repeats=repeats,
                                   max_seconds=max_seconds, warmup_seconds=warmup_seconds)  # fmt: skip
                results.append(
                    {"backend": backend, "batch": int(b), "file": file, "size_bytes": int(size), **_summary(times, b)}
                )
    finally:
        torch.set_num_threads(old_threads)
    return {
        "threads": threads,
        "warmup": warmup,
        "warmup_seconds": warmup_seconds,
        "repeats": repeats,
        "max_seconds": max_seconds,
        "machine": _machine(),
        "load_before": [round(v, 2) for v in load_before],
        "settled_after_s": settled,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "steal_pct": _steal_pct(cpu_before, _cpu_times()),
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__}
        | ({"openvino": backend_version("openvino")} if "openvino" in have else {}),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": results,
        "skipped": skipped,
    }


def bench_run(run_dir: str | Path, weights: str = "best", **kwargs: Any) -> dict[str, Any]:
    """``benchmark_latency`` of an exported run (needs ``RUN/export/export.json``)."""
    from stillroom.runs import load_run

    run_dir = Path(run_dir)
    exp_path = run_dir / "export" / "export.json"
    if not exp_path.is_file():
        raise StillroomError(f"{exp_path}: not found; run `stillroom export {run_dir} --onnx --int8` first")
    exp = read_json(exp_path)
    run = load_run(run_dir, exp["weights"]["name"] if weights is None else weights, device="cpu")
    models, d = exp["models"], run_dir / "export"
    files = {"ort_fp32": {"fixed": d / models["fp32"]["file"]}}
    if "fp32_dynamic" in models:
        files["ort_fp32"]["dynamic"] = d / models["fp32_dynamic"]["file"]
    if "int8" in models:
        files["ort_int8"] = {"dynamic" if models["int8"]["batch"] == "dynamic" else "fixed": d / models["int8"]["file"]}
    meta = run.meta
    shape = (int(meta["in_chans"]), int(meta["img_size"]), int(meta["img_size"]))
    out = benchmark_latency(run.model, shape, files, **kwargs)
    out["config"] = {
        "arch": meta["arch"], "in_chans": shape[0], "img_size": shape[1], "num_classes": int(meta["num_classes"]),
        "weights": f"trained run {run_dir} ({run.weights_path.name})",
        "int8_method": (exp.get("int8_check") or {}).get("method", "ort" if "int8" in models else None),
    }  # fmt: skip
    out["int8_check"] = exp.get("int8_check")
    return out


def bench_arch(
    arch: str,
    img_size: int = 128,
    in_chans: int = 1,
    num_classes: int = 151,
    seed: int = 0,
    int8_method: str = "auto",
    **kwargs: Any,
) -> dict[str, Any]:
    """``benchmark_latency`` of an untrained ``arch`` (exported and int8-quantized in a temporary directory, int8
    by ``int8_method`` as ``stillroom export --int8 --int8-method`` would, calibrated on 64 drawn silhouettes)."""
    from stillroom.deploy._ort import normalize_uint8
    from stillroom.deploy.onnx_export import (
        TrainImagesReader,
        export_int8,
        export_model_onnx,
        quantize_int8_nncf,
        resolve_int8_method,
    )
    from stillroom.models.factory import create_model

    method = resolve_int8_method(int8_method)
    torch.manual_seed(seed)
    model = create_model(arch, in_chans, num_classes, img_size).eval()
    shape = (in_chans, img_size, img_size)
    with tempfile.TemporaryDirectory(prefix="stillroom-bench-") as tmp:
        d = Path(tmp)
        export_model_onnx(model, d / "model.onnx", shape, dynamic=False)
        export_model_onnx(model, d / "model_dynamic.onnx", shape, dynamic=True)
        calib = np.repeat(_silhouettes(64, img_size, seed=seed + 1)[:, None], in_chans, axis=1)
        mean, std = [0.5] * in_chans, [0.5] * in_chans
        if method == "nncf":
            quantize_int8_nncf(d / "model_dynamic.onnx", d / "model_int8.onnx", normalize_uint8(calib, mean, std))
        else:
            reader = TrainImagesReader(calib, np.arange(len(calib)), mean, std, batch_size=16)
            export_int8(model, d / "model_int8.onnx", shape, dynamic=True, reader=reader)
        files = {
            "ort_fp32": {"fixed": d / "model.onnx", "dynamic": d / "model_dynamic.onnx"},
            "ort_int8": {"dynamic": d / "model_int8.onnx"},
        }
        out = benchmark_latency(model, shape, files, **kwargs)
    out["config"] = {
        "arch": arch, "in_chans": in_chans, "img_size": img_size, "num_classes": num_classes,
        "weights": f"untrained (torch.manual_seed({seed}))", "int8_method": method,
    }  # fmt: skip
    out["int8_check"] = None
    return out


# --- BENCHMARKS.md ---------------------------------------------------------------------------------------------


def _entry_key(result: dict[str, Any]) -> str:
    c = result["config"]
    trained = "untrained" if c["weights"].startswith("untrained") else "trained"
    return f"{c['arch']} {c['in_chans']}x{c['img_size']}x{c['img_size']} {c['num_classes']} classes {trained}"


def _render_entry(result: dict[str, Any], command: str) -> str:
    c, m = result["config"], result["machine"]
    key = _entry_key(result)
    lb, la, steal = result["load_before"], result["load_after"], result.get("steal_pct")
    # The 1-min load after a run includes the benchmark itself (2 busy threads); only the load before it says how
    # busy the machine was with other work.
    loaded = lb[0] > 0.5 * max(m["cpus_visible"], 1)
    lines = [
        f"<!-- bench-latency:begin {key} -->",
        f"### {c['arch']}, {c['in_chans']}x{c['img_size']}x{c['img_size']}, {c['num_classes']} classes, {c['weights']}",
        "",
        f"Command: `{command}`",
        "",
        f"Measured {result['measured_at']} on {m['cpu']} ({m['cpus_visible']} CPUs visible), "
        f"{result['threads']} threads for both runtimes; torch {result['versions']['torch']}, "
        f"onnxruntime {result['versions']['onnxruntime']}. Warm-up {result['warmup']} calls (batch 1) and at least "
        f"{result.get('warmup_seconds', 0):g} s per row, then up to "
        f"{result['repeats']} timed calls or {result['max_seconds']:g} s per row.",
        f"Load average (1/5/15 min) before {lb[0]}/{lb[1]}/{lb[2]}, after {la[0]}/{la[1]}/{la[2]}"
        + ("" if steal is None else f", CPU steal {steal}%")
        + (
            ": **other jobs were using the CPUs when the run started; the numbers are pessimistic and noisy.**"
            if loaded
            else " (the load after includes the benchmark's own threads)."
        ),
        "",
        "| backend | batch | median ms | p95 ms | throughput img/s | runs | file | MB |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in result["results"]:
        size = r.get("size_bytes")
        lines.append(
            f"| {_LABELS[r['backend']]} | {r['batch']} | {r['median_ms']:.3f} | {r['p95_ms']:.3f} | "
            f"{r['throughput_img_s']:.0f} | {r['runs']} | {r['file'] or '-'} | "
            f"{'-' if size is None else f'{size / 1e6:.2f}'} |"
        )
    lines.append("")
    for sk in result.get("skipped", []):
        lines.append(f"Not run: {_LABELS[sk['backend']]} batch {sk['batch']} ({sk['reason']}).")
    chk = result.get("int8_check")
    if chk:
        lines.append(
            f"int8 accuracy check ({chk.get('method', 'ort')}; val, {chk['n']} images): top-1 "
            f"{100 * chk['top1_fp32']:.2f}% fp32 vs {100 * chk['top1_int8']:.2f}% int8 (drop "
            f"{100 * chk['top1_drop']:.2f} pt, {'within' if chk['ok'] else 'OUTSIDE'} the {100 * chk['max_drop']:.1f} "
            "pt limit)"
            + (
                f"; test, {t['n']} images: {100 * t['top1_fp32']:.2f}% vs {100 * t['top1_int8']:.2f}%."
                if (t := chk.get("splits", {}).get("test"))
                else "."
            )
        )
    else:
        lines.append("int8 accuracy: not measured (untrained weights; see `stillroom export --int8` on a trained run).")
    target = TARGETS.get((c["arch"], c["img_size"]))
    if target:
        med = {(r["backend"], r["batch"]): r["median_ms"] for r in result["results"]}
        parts = []
        for backend, limit in target.items():
            got = med.get((backend, 1))
            verdict = "not measured" if got is None else ("met" if got <= limit else "**missed**")
            parts.append(f"{_LABELS[backend]} batch-1 median <= {limit} ms: {verdict}")
        lines.append(f"Targets (issue 6, 2 cores): {'; '.join(parts)}.")
    lines.append(f"<!-- bench-latency:end {key} -->")
    return "\n".join(lines) + "\n"


def update_benchmarks_md(path: str | Path, result: dict[str, Any], command: str) -> Path:
    """Write ``result`` into the latency section of ``path`` (created when absent): an entry with the same
    configuration key is replaced in place, a new one appended to the section; the rest of the file is kept."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    entry = _render_entry(result, command)
    key = re.escape(_entry_key(result))
    pattern = re.compile(rf"<!-- bench-latency:begin {key} -->.*?<!-- bench-latency:end {key} -->\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: entry, text, count=1)
    elif LATENCY_SECTION in text:
        start = text.index(LATENCY_SECTION)
        nxt = re.search(r"^## ", text[start + len(LATENCY_SECTION) :], re.M)
        end = start + len(LATENCY_SECTION) + nxt.start() if nxt else len(text)
        section = text[start:end].rstrip("\n") + "\n\n" + entry
        text = text[:start] + section + ("\n" + text[end:] if end < len(text) else "")
    else:
        text = text.rstrip("\n") + "\n\n" + LATENCY_SECTION + "\n\n" + entry
    atomic_write_text(path, text)
    return path
