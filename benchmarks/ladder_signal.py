"""Ladder signal on a real open-set run (issue 16 item 4): fit the ladder with ``signal=maxlogit`` and with ``auto``
on a copy of the run (the run directory is never written), and print each candidate's val AUROC and the ladder's ID
accept / OOD reject: on val from the fit (ladder rules only) and on val and test with the structure gate first, as
the service applies it (``run_ladder_report``).

    for s in 0 1 2; do python benchmarks/ladder_signal.py artifacts/openset151/runs/os_student_kd_s$s \\
        artifacts/openset151/ood; done
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from stillroom.deploy.run_ladder import fit_run_ladder, run_ladder_report

RUN_FILES = ("model.json", "config.json", "best.safetensors", "final.safetensors", "calibration.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("ood_index", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ladder_signal_runs"))
    args = ap.parse_args(argv)
    dst = args.work / args.run.name
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in RUN_FILES:
        if (args.run / name).is_file():
            shutil.copy2(args.run / name, dst / name)
    out = {}
    for signal in ("maxlogit", "auto"):
        lad = fit_run_ladder(dst, ood_index=args.ood_index, signal=signal)
        s = lad.fit_summary_
        row = {
            "signal": lad.signal_,
            "selection": s["signal"],
            "val_logits_only": {"id_accept": s["id"]["accept"], "ood_reject": s["ood"]["reject"]},
        }
        for split in ("val", "test"):
            rep = run_ladder_report(dst, split=split, ood_index=args.ood_index)
            row[f"{split}_with_gate"] = {
                "id_accept": rep["id"]["coverage"],
                "id_selective_accuracy": rep["id"]["selective_accuracy"],
                "ood_reject": rep["ood"]["rejection"],
            }
        out[signal] = row
    print(json.dumps({"run": str(args.run), **out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
