"""Runtimes side by side (issue 15): PyTorch eager, ONNX Runtime fp32 / int8, OpenVINO fp32 / int8, batch 1 and 64.

    python benchmarks/bench_backends.py                                # mnv3-small 64 px + mnv3-large 128 px
    python benchmarks/bench_backends.py --config mobilenet_v3_small:64 --repeats 5 --md ''   # quick check
    python benchmarks/bench_backends.py --run RUN [--run RUN2]          # exported trained runs (stillroom export)

One Markdown table, one row per (model, runtime, precision, int8 method): file size, batch-1 median and p95,
batch-64 median and throughput. Untrained models (``--config ARCH:SIZE``) are exported and quantized as
``stillroom export --int8`` would, once per ``--int8-method`` (default: ``nncf``, the accurate one, and ``ort``,
ONNX Runtime's own quantizer, whose layout is the fast one there); trained runs use the files their export wrote
and carry its int8 accuracy check. OpenVINO rows need the ``openvino`` extra; a file it cannot compile is listed as
not run. The table goes between markers into ``--md`` (default BENCHMARKS.md; '' to skip) with the command line
and the load average: on a busy machine the numbers are not valid (the section says so). Method and caveats:
``stillroom.deploy.latency``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from stillroom._io import replace_marked_section
from stillroom.deploy.latency import add_timing_args, bench_arch, bench_run
from stillroom.deploy.onnx_export import int8_check_summary

BEGIN = "<!-- bench-backends:begin -->"
END = "<!-- bench-backends:end -->"
HEADING = "## Runtimes side by side (`benchmarks/bench_backends.py`)"
DEFAULT_CONFIGS = ("mobilenet_v3_small:64", "mobilenet_v3_large:128")
_RUNTIME = {"eager": "PyTorch eager", "ort": "ONNX Runtime", "ov": "OpenVINO"}


def _row_key(backend: str) -> tuple[str, str]:
    if backend == "eager":
        return "eager", "fp32"
    runtime, precision = backend.split("_")
    return runtime, precision


def _collect(res: dict[str, Any], method: str | None) -> dict[tuple[str, str, str | None], dict[str, Any]]:
    """(runtime, precision, int8 method) -> {"file", "size_bytes", 1: result row, 64: result row}."""
    rows: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for r in res["results"]:
        runtime, precision = _row_key(r["backend"])
        key = (runtime, precision, method if precision == "int8" else None)
        entry = rows.setdefault(key, {"files": set(), "size_bytes": set()})
        entry[r["batch"]] = r
        entry["files"].add(r["file"] or "-")
        entry["size_bytes"].add(r.get("size_bytes"))
    for sk in res.get("skipped", []):
        runtime, precision = _row_key(sk["backend"])
        key = (runtime, precision, method if precision == "int8" else None)
        rows.setdefault(key, {"files": set(), "size_bytes": set()}).setdefault("skipped", sk["reason"])
    return rows


def _fmt_ms(row: dict[str, Any] | None, field: str) -> str:
    return "-" if row is None else f"{row[field]:.3f}"


def _fmt_rate(row: dict[str, Any] | None) -> str:
    return "-" if row is None else f"{row['throughput_img_s']:.0f}"


def render(models: list[dict[str, Any]], command: str, batches: tuple[int, int]) -> str:
    b1, bn = batches
    lines = [
        BEGIN,
        HEADING,
        "",
        f"Command: `{command}`",
        "",
    ]
    first = models[0]["raw"][0]
    m = first["machine"]
    loads = [
        (f"{x['name']} [int8 {r['config'].get('int8_method')}]", r["load_before"], r.get("steal_pct"))
        for x in models
        for r in x["raw"]
    ]
    busy = any(lb[0] > 0.5 * max(m["cpus_visible"], 1) for _, lb, _ in loads)
    versions = {k: v for r in (x["raw"][0] for x in models) for k, v in r["versions"].items()}
    lines.append(
        f"Measured {first['measured_at']} on {m['cpu']} ({m['cpus_visible']} CPUs visible), {first['threads']} "
        f"threads for every runtime; " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ". "
        f"Per row: warm-up at least {first.get('warmup_seconds', 0):g} s, then up to {first['repeats']} timed calls "
        f"or {first['max_seconds']:g} s. Load average (1 min) before each block: "
        + ", ".join(f"{n} {lb[0]}" for n, lb, _ in loads)
        + (". **Other jobs were using the CPUs: these numbers are not valid measurements.**" if busy else ".")
    )
    lines += [
        "",
        f"| model | runtime | precision | int8 method | file | MB | batch {b1} median ms | batch {b1} p95 ms | "
        f"batch {bn} median ms | batch {bn} img/s |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    order = {"eager": 0, "ort": 1, "ov": 2}
    for model in models:
        for (runtime, precision, method), e in sorted(
            model["rows"].items(), key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2] or "")
        ):
            sizes = [s for s in e["size_bytes"] if s is not None]
            size = f"{max(sizes) / 1e6:.2f}" if sizes else "-"
            r1, rn = e.get(b1), e.get(bn)
            if r1 is None and rn is None:
                lines.append(
                    f"| {model['name']} | {_RUNTIME[runtime]} | {precision} | {method or '-'} | - | - | "
                    f"not run: {e.get('skipped', '?')} | | | |"
                )
                continue
            lines.append(
                f"| {model['name']} | {_RUNTIME[runtime]} | {precision} | {method or '-'} | "
                f"{' / '.join(sorted(e['files']))} | {size} | {_fmt_ms(r1, 'median_ms')} | {_fmt_ms(r1, 'p95_ms')} | "
                f"{_fmt_ms(rn, 'median_ms')} | {_fmt_rate(rn)} |"
            )
    lines.append("")
    for model in models:
        chk = model.get("int8_check")
        if chk:
            per = int8_check_summary(chk)
            lines.append(
                f"{model['name']}: int8 check ({chk.get('method', 'ort')}) {'passed' if chk['ok'] else 'FAILED'}: "
                f"top-1 {per}."
            )
    if any(not x.get("int8_check") for x in models):
        lines.append("Untrained weights: timing only; int8 accuracy comes from `stillroom export --int8` on a run.")
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", help="ARCH:IMG_SIZE, untrained (repeatable; default both mnv3)")
    p.add_argument("--run", action="append", type=Path, help="exported run directory (repeatable)")
    p.add_argument("--int8-method", action="append", choices=["nncf", "ort"], help="untrained configs (repeatable)")
    p.add_argument("--batch", type=int, nargs=2, default=[1, 64], metavar=("SMALL", "LARGE"))
    add_timing_args(p)
    p.add_argument("--json", type=Path, help="also write the raw results here")
    args = p.parse_args(argv)
    kw = dict(batch_sizes=list(args.batch), threads=args.threads, warmup=args.warmup, repeats=args.repeats,
              max_seconds=args.max_seconds, warmup_seconds=args.warmup_seconds,
              settle_seconds=args.settle_seconds)  # fmt: skip
    methods = args.int8_method or (["nncf", "ort"] if importlib.util.find_spec("nncf") else ["ort"])
    models: list[dict[str, Any]] = []
    for run in args.run or []:
        res = bench_run(run, **kw)
        c = res["config"]
        name = f"{c['arch']} {c['img_size']} px ({run.name})"
        models.append({"name": name, "raw": [res], "rows": _collect(res, c.get("int8_method")),
                       "int8_check": res.get("int8_check")})  # fmt: skip
    for spec in args.config or ([] if args.run else list(DEFAULT_CONFIGS)):
        arch, _, size = spec.partition(":")
        if not size.isdigit():
            p.error(f"--config wants ARCH:IMG_SIZE, got {spec!r}")
        name = f"{arch} {size} px"
        rows: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        raws = []
        for i, method in enumerate(methods):
            backends = None if i == 0 else ("ort_int8", "ov_int8")  # fp32 rows once
            extra = {} if backends is None else {"backends": backends}
            res = bench_arch(arch, img_size=int(size), in_chans=args.in_chans, num_classes=args.num_classes,
                             int8_method=method, **kw, **extra)  # fmt: skip
            raws.append(res)
            rows.update(_collect(res, method))
        models.append({"name": name, "raw": raws, "rows": rows, "int8_check": None})
    command = " ".join(["python benchmarks/bench_backends.py", *(shlex.quote(a) for a in argv)])
    text = render(models, command, (args.batch[0], args.batch[1]))
    print(text)
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in m.items() if k != "rows"} for m in models], indent=2) + "\n")
    if args.md:
        print(f"updated {replace_marked_section(args.md, BEGIN, END, text.rstrip(chr(10)))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
