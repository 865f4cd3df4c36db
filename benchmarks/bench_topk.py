"""Soft-label store compression: effect of top-k (and float16) on the KD term and on the store size.

    python benchmarks/bench_topk.py                                  # synthetic peaked stores only
    python benchmarks/bench_topk.py --store RUN/softlabels/HASH --student-store OTHER_RUN/softlabels/HASH --write

For each source of teacher logits z_t (N, K) and student logits z_s (N, K), and each storage variant (float32 or
float16, all K logits or the top k in 1, 5, 10, 20 plus the rest's log-sum-exp), the teacher logits are stored and
read back exactly as ``stillroom.softlabels.store`` does (``topk_compress`` + ``reconstruct_topk``), and the
per-row KD term of the trainer's ``kd`` loss,

    KD_i = T^2 KL(softmax(z_t,i / T) || softmax(z_s,i / T)),   T = 4 by default,

is compared with the one from the exact float32 logits: mean |KD_i' - KD_i| (per row), that divided by mean KD_i
("relative"), the relative change of the batch-mean KD (what the optimizer sees), and the mean cosine between
the per-row KD gradients w.r.t. the student logits, T (p_s^T - p_t^T). Sizes are the bytes of the store's .npy
files. Sources: synthetic teachers (a clear winner +9, one confusable class +5, the rest N(0, sigma), sigma 2 and
0.5) with a half-trained student (0.6 z_t + N(0, 1.5)); optionally a real store (``--store``) whose student is
another teacher's store of the same index (``--student-store``) or the synthetic student rule.

``--write`` replaces the section between the bench-topk markers of BENCHMARKS.md (created at the end when absent),
recording the command. The student-accuracy effect needs a training run and is recorded by hand below the
section (never overwritten by this script).
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stillroom._io import replace_marked_section
from stillroom.distill.losses import build_loss
from stillroom.softlabels.store import SoftLabelStore, reconstruct_topk, topk_compress

BEGIN, END = "<!-- bench-topk:begin -->", "<!-- bench-topk:end -->"
TITLE = "## Soft-label store compression (top-k, float16)"
ACCURACY_NOTE = """### Top-k stores: effect on student accuracy

Not measured yet. To be filled in by the lead from a training run (same config and seed, KD student trained from
the full float32 store vs the top-10 / float16 stores of the same teacher); the command and the test top-1 /
macro-F1 of each go here. `benchmarks/bench_topk.py --write` never touches this subsection.
"""


def synthetic_source(n: int, k: int, rest_std: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(teacher, student) float32 logits (N, K): a peaked teacher and a half-trained student (module docstring)."""
    rng = np.random.default_rng(seed)
    t = rng.normal(0.0, rest_std, size=(n, k))
    rows = np.arange(n)
    t[rows, rng.integers(0, k, n)] += 9.0
    t[rows, rng.integers(0, k, n)] += 5.0
    return t.astype(np.float32), synthetic_student(t, seed + 1)


def synthetic_student(teacher: np.ndarray, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.6 * teacher + rng.normal(0.0, 1.5, size=teacher.shape)).astype(np.float32)


def stored_bytes(*arrays: np.ndarray) -> int:
    """Bytes of ``arrays`` saved as .npy files (header included), as in a store directory."""
    total = 0
    for arr in arrays:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        total += buf.tell()
    return total


def kd_rows(teacher: np.ndarray, student: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row KD_i = T^2 KL(p_t^T || p_s^T) (N,) and its gradient w.r.t. the student logits T (p_s^T - p_t^T)."""
    t = torch.from_numpy(np.asarray(teacher, dtype=np.float64)) / temperature
    s = torch.from_numpy(np.asarray(student, dtype=np.float64)) / temperature
    log_pt, log_ps = torch.log_softmax(t, 1), torch.log_softmax(s, 1)
    kd = temperature**2 * (log_pt.exp() * (log_pt - log_ps)).sum(1)
    grad = temperature * (log_ps.exp() - log_pt.exp())
    return kd.numpy(), grad.numpy()


def variants(ks: list[int]) -> list[tuple[str, int]]:
    return [(dtype, k) for dtype in ("float32", "float16") for k in (0, *ks)]


def measure(
    name: str, teacher: np.ndarray, student: np.ndarray, ks: list[int], temperature: float
) -> list[dict[str, Any]]:
    """One row per storage variant of ``teacher``; see the module docstring for the columns."""
    n, k_all = teacher.shape
    kd_ref, grad_ref = kd_rows(teacher, student, temperature)
    # the per-row formula is the trainer's loss: check once against the registered ``kd`` module
    loss = build_loss("kd", kd_weight=1.0, temperature=temperature)
    batch = loss(torch.from_numpy(student).double(), torch.from_numpy(teacher).double()[None], torch.zeros(n).long())
    assert abs(float(batch["loss_kd"]) - kd_ref.mean()) <= 1e-9 * max(1.0, kd_ref.mean())
    full_bytes = stored_bytes(teacher.astype(np.float32))
    out = []
    for dtype, k in variants(ks):
        if k >= k_all:
            continue
        if k:
            parts = topk_compress(teacher, k, dtype)
            rebuilt = reconstruct_topk(*parts, k_all)
            size = stored_bytes(*parts)
        else:
            rebuilt = teacher.astype(dtype).astype(np.float32)
            size = stored_bytes(teacher.astype(dtype))
        kd, grad = kd_rows(rebuilt, student, temperature)
        cos = (grad * grad_ref).sum(1) / np.maximum(
            np.linalg.norm(grad, axis=1) * np.linalg.norm(grad_ref, axis=1), 1e-300
        )
        out.append(
            {
                "source": name,
                "dtype": dtype,
                "k": k or k_all,
                "topk": bool(k),
                "bytes": size,
                "size_ratio": size / full_bytes,
                "kd_full": float(kd_ref.mean()),
                "kd": float(kd.mean()),
                "mean_abs_diff": float(np.abs(kd - kd_ref).mean()),
                "rel_diff": float(np.abs(kd - kd_ref).mean() / kd_ref.mean()),
                "rel_batch_diff": float((kd.mean() - kd_ref.mean()) / kd_ref.mean()),
                "grad_cos": float(cos.mean()),
            }
        )
    return out


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| source | dtype | stored | bytes | size vs fp32 | mean KD | mean abs diff | relative | batch-mean change "
        "| grad cos |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        stored = f"top-{r['k']} + rest lse" if r["topk"] else f"all {r['k']}"
        lines.append(
            f"| {r['source']} | {r['dtype']} | {stored} | {r['bytes']:,} | {r['size_ratio']:.3f} | {r['kd']:.4f} "
            f"| {r['mean_abs_diff']:.2e} | {r['rel_diff']:.2%} | {r['rel_batch_diff']:+.2%} | {r['grad_cos']:.4f} |"
        )
    return "\n".join(lines)


def render(results: list[dict[str, Any]], sources: list[str], command: str, temperature: float) -> str:
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return "\n".join(
        [
            BEGIN,
            f"Command: `{command}`",
            "",
            f"Measured {when}; numpy {np.__version__}, torch {torch.__version__}. KD term at T = {temperature:g} "
            "(`kd` loss, kd_weight 1): mean over rows of T^2 KL(p_t || p_s) with the teacher logits as stored vs as "
            "exact float32; 'relative' = mean abs diff / mean KD of the exact logits; 'batch-mean change' = relative "
            "change of the batch-mean KD; 'grad cos' = mean per-row cosine of the KD gradient w.r.t. the student "
            "logits. Sizes: bytes of the store's .npy files (top-k: indices int16 + values + float32 rest lse).",
            "",
            "Sources: " + "; ".join(sources) + ".",
            "",
            _table(results),
            "",
            "At T = 1 a top-k store is exact on the top-k probabilities and on the total rest mass; at T > 1 its "
            "uniform rest gets more tempered mass than the real one (power-mean inequality, "
            "`stillroom/softlabels/store.py`), so the KD term differs most where the rest logits are spread out. "
            "Student accuracy: see the next subsection (a training run, not this script).",
            END,
        ]
    )


def update_md(path: Path, section: str) -> Path:
    """Replace the text between the markers of ``path``; or append the title, section and accuracy note."""
    return replace_marked_section(path, BEGIN, END, section, f"{TITLE}\n\n{section}\n\n{ACCURACY_NOTE}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, help="a real soft-label store (un-augmented, float32 or float16)")
    p.add_argument("--student-store", type=Path, help="student logits: another store of the same index")
    p.add_argument("--rows", type=int, default=4096, help="rows of the synthetic stores")
    p.add_argument("--classes", type=int, default=151, help="classes of the synthetic stores")
    p.add_argument("--k", type=int, action="append", help="top-k to try (repeatable; default 1, 5, 10, 20)")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--write", action="store_true", help="replace the bench-topk section of --md")
    p.add_argument("--md", type=Path, default=Path("BENCHMARKS.md"))
    args = p.parse_args(argv)
    ks = sorted(set(args.k or [1, 5, 10, 20]))
    results, sources = [], []
    for sigma in (2.0, 0.5):
        name = f"synthetic sigma={sigma:g}"
        teacher, student = synthetic_source(args.rows, args.classes, sigma)
        results += measure(name, teacher, student, ks, args.temperature)
        sources.append(f"{name}: {args.rows} x {args.classes}, rest logits N(0, {sigma:g})")
    if args.store is not None:
        store = SoftLabelStore.open(args.store)
        if store.views or store.compression["kind"] != "none":
            p.error(f"{args.store}: need an un-augmented, uncompressed store")
        teacher = np.array(store.logits, dtype=np.float32)  # writable copy: torch warns on read-only arrays
        if args.student_store is not None:
            other = SoftLabelStore.open(args.student_store)
            if other.manifest["index_hash"] != store.manifest["index_hash"] or other.logits.shape != teacher.shape:
                p.error(f"{args.student_store}: not a store of the same index and shape as {args.store}")
            student, who = np.array(other.logits, dtype=np.float32), f"student = {args.student_store}"
        else:
            student, who = synthetic_student(teacher), "student = 0.6 teacher + N(0, 1.5)"
        name = f"store {store.teacher.get('arch')} {store.manifest['index_hash'][:12]}"
        results += measure(name, teacher, student, ks, args.temperature)
        sources.append(f"{name}: {args.store} ({teacher.shape[0]} x {teacher.shape[1]}, {who})")
    print(_table(results))
    if args.write:
        command = " ".join(["python benchmarks/bench_topk.py", *(shlex.quote(a) for a in argv)])
        print(f"updated {update_md(args.md, render(results, sources, command, args.temperature))}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
