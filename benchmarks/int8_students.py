"""int8 on trained students (issue 15 item 1): ``stillroom export --int8`` settings side by side, one row per
(run, setting), fp32 vs int8 top-1 on val (the gate) and test (reported), prediction agreement, and for K+1 models
the sink AUROC of both.

    python benchmarks/int8_students.py artifacts/demo/runs/student_mnv3s_kd \\
        artifacts/openset151/runs/os_student_td_cap_s0 artifacts/crossview151/sweep/kd_r18/seed{0,1,2} \\
        --out artifacts/int8_students

Settings (``--setting NAME``, repeatable; default: all): ``top1``, the export default (NNCF, full bias correction,
accuracy control on top-1 of 1,000 labelled ID training images, drop <= 1 point); ``agreement``, accuracy control
on agreement with fp32's argmax over every training row (K+1 sink included), drop <= 3 points
(``agreement-strict``: <= 1 point, more layers back in fp32; ``agreement-strict-stem``: the same with the stem left
unquantized, ``--int8-fp32-stem``); ``qat``: quantization-aware fine-tuning (``--int8-method qat``,
``stillroom.deploy.qat``). Each run is linked
(files only) into ``OUT/<run>__<setting>/`` and exported there, so the run directories are never written; a finished
pair is read back, not redone (resumable). Writes the table of the call to ``OUT/NAME.md`` and ``.csv``
(``--name``, default ``int8_students``). Backends are not timed
here (``benchmarks/bench_backends.py`` is the latency measurement), but each runtime's int8 check is recorded.

``--style INDEX`` (repeatable) also scores the fp32 and int8 ONNX files in ONNX Runtime on the val and test rows of
another index of the same classes (matched by name), e.g. the species' box icons by another artist: does int8 keep
what the student reads of another style, not only of its own data? Columns ``<index>_<split>_fp32`` / ``_int8``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import StillroomError, atomic_write_text, read_json
from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.deploy._ort import normalize_uint8, ort_logits, ort_session
from stillroom.deploy.onnx_export import export_onnx
from stillroom.runs import load_run

SETTINGS: dict[str, dict[str, Any]] = {
    "top1": {},
    "agreement": {"int8_control_metric": "agreement", "int8_control_drop": 0.03, "control_samples": 100_000},
    "agreement-strict": {"int8_control_metric": "agreement", "int8_control_drop": 0.01, "control_samples": 100_000},
    "agreement-strict-stem": {
        "int8_control_metric": "agreement",
        "int8_control_drop": 0.01,
        "control_samples": 100_000,
        "int8_fp32_stem": True,
    },
    "qat": {"int8_method": "qat"},
}


def _name(run: Path) -> str:
    parts = run.resolve().parts
    return "_".join(parts[-2:]) if parts[-1].startswith("seed") else parts[-1]


def _link(run: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in run.iterdir():
        if f.is_file() and not (dst / f.name).exists():
            (dst / f.name).symlink_to(f.resolve())


def _row(run: Path, setting: str, rep: dict[str, Any]) -> dict[str, Any]:
    chk = rep["int8_check"]
    row: dict[str, Any] = {"run": str(run), "setting": setting, "ok": chk["ok"], "ok_test": chk.get("ok_test")}
    for split, r in chk["splits"].items():
        row[f"{split}_fp32"], row[f"{split}_int8"] = r["top1_fp32"], r["top1_int8"]
        row[f"{split}_drop"], row[f"{split}_agreement"] = r["top1_drop"], r["top1_agreement"]
        if "sink" in r:
            row[f"{split}_auroc_fp32"], row[f"{split}_auroc_int8"] = r["sink"]["auroc_fp32"], r["sink"]["auroc_int8"]
    ac = chk["quantizer"].get("accuracy_control") or {}
    row["quantizers"] = ac.get("quantizers", chk["quantizer"].get("quantizers"))  # qat records its own count
    row["seconds"] = rep.get("seconds")
    ov = (rep.get("backends") or {}).get("openvino", {}).get("int8") or {}
    row["openvino_ok"] = ov.get("ok")
    return row


def style_top1(run_dir: Path, export_dir: Path, style: Path) -> dict[str, float]:
    """``{"<index name>_<split>_<fp32|int8>": top-1}`` of the exported ONNX files on ``style``'s val and test rows,
    the argmax over the run's outputs for the index's classes (by name), inputs normalized as the run's."""
    run, idx = load_run(run_dir, device="cpu"), load_index(style)
    missing = [c for c in idx.classes if c not in run.classes]
    if missing:
        raise StillroomError(f"{style}: classes not among {run_dir}'s outputs: {missing[:5]}")
    cols = np.array([run.classes.index(c) for c in idx.classes])
    mean, std = run.normalizer.mean.flatten().tolist(), run.normalizer.std.flatten().tolist()
    images, out = load_images(idx), {}
    for kind, name in (("fp32", "model.onnx"), ("int8", "model_int8.onnx")):
        sess = ort_session(export_dir / name, threads=1)
        for split in ("val", "test"):
            rows = np.flatnonzero(idx.splits == split)
            if len(rows) == 0:
                continue
            logits = ort_logits(sess, normalize_uint8(np.asarray(images[rows]), mean, std))
            pred = logits[:, cols].argmax(axis=1)
            out[f"{style.name}_{split}_{kind}"] = float(np.mean(pred == idx.labels[rows]))
    return out


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        "| run | setting | val fp32 -> int8 (drop, pt) | test fp32 -> int8 (drop, pt) | agreement val / test | "
        "sink AUROC val fp32 -> int8 | quantizers | gate (val) |",
        "|---|---|---|---|---|---|---:|---|",
    ]
    styles = sorted({k.rsplit("_", 2)[0] for r in rows for k in r if k.endswith(("_val_fp32", "_test_fp32"))})
    if styles:
        lines[2] = lines[2] + "".join(f" {s} val / test fp32 -> int8 |" for s in styles)
        lines[3] = lines[3] + "---|" * len(styles)
    for r in rows:
        auroc = (
            f"{r['val_auroc_fp32']:.4f} -> {r['val_auroc_int8']:.4f}" if "val_auroc_fp32" in r else "-"
        )  # fmt: skip
        lines.append(
            f"| {_name(Path(r['run']))} | {r['setting']}"
            f" | {_pct(r['val_fp32'])} -> {_pct(r['val_int8'])} ({_pct(r['val_drop'])})"
            f" | {_pct(r.get('test_fp32'))} -> {_pct(r.get('test_int8'))} ({_pct(r.get('test_drop'))})"
            f" | {_pct(r['val_agreement'])} / {_pct(r.get('test_agreement'))} | {auroc} | {r['quantizers']}"
            f" | {'pass' if r['ok'] else 'FAIL'} |"
            + "".join(
                f" {_pct(r.get(f'{s}_val_fp32'))} -> {_pct(r.get(f'{s}_val_int8'))} /"
                f" {_pct(r.get(f'{s}_test_fp32'))} -> {_pct(r.get(f'{s}_test_int8'))} |"
                for s in styles
            )
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("artifacts/int8_students"))
    ap.add_argument("--setting", action="append", choices=sorted(SETTINGS), help="default: all")
    ap.add_argument("--name", default="int8_students", help="OUT/NAME.md and OUT/NAME.csv (the table of this call)")
    ap.add_argument("--style", action="append", type=Path, default=[], help="another index of the same classes")
    args = ap.parse_args(argv)
    settings = args.setting or list(SETTINGS)
    rows = []
    for run in args.runs:
        for setting in settings:
            dst = args.out / f"{_name(run)}__{setting}"
            exp = dst / "export" / "export.json"
            rep = read_json(exp) if exp.is_file() else {}
            if "int8_check" not in rep:
                _link(run, dst)
                print(f"export {run} ({setting}) -> {dst}", flush=True)
                rep = export_onnx(dst, int8=True, backend_timing=0, **SETTINGS[setting])
            rows.append(_row(run, setting, rep))
            for style in args.style:
                rows[-1].update(style_top1(run, dst / "export", style))
            print(json.dumps(rows[-1]), flush=True)
    command = "python benchmarks/int8_students.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    atomic_write_text(args.out / f"{args.name}.md", _markdown(rows, command))
    keys = sorted({k for r in rows for k in r})
    with open(args.out / f"{args.name}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(_markdown(rows, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
