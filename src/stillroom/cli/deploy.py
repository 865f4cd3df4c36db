"""CLI commands for deployment: ``export``, ``bench-latency``, ``serve`` and ``feedback export``.

``register(app)`` adds them to a typer app; ``stillroom.cli`` wires them in. Heavy imports (onnxruntime, fastapi,
uvicorn) happen inside the commands, so the rest of the CLI works without the deployment extras.
"""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

import typer
from rich.table import Table

from stillroom._io import StillroomError, read_json
from stillroom._progress import console

__all__ = ["register"]


def _command_line(prog: str = "stillroom") -> str:
    """The exact command as typed, with the program shown as ``prog`` (recorded in BENCHMARKS.md)."""
    return " ".join([prog, *(shlex.quote(a) for a in sys.argv[1:])])


def _check_number(
    option: str, value: float | int | None, low: float, high: float, low_open: bool = False
) -> float | int | None:
    """``value`` if it is a finite number in [low, high] (``(low, high]`` with ``low_open``; None passes), else a
    one-line ``StillroomError`` naming the option: NaN, inf and negative values never reach the code."""
    if value is None:
        return None
    ok = isinstance(value, int | float) and math.isfinite(value) and value <= high
    ok = ok and (value > low if low_open else value >= low)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise StillroomError(f"{option} {value!r}: must be a finite number in {bounds}")
    return value


# Sane ceilings for serve: nothing larger is a useful limit for a silhouette classifier on one machine.
MAX_UPLOAD_MB_LIMIT = 1024.0
MAX_THREADS = 1024


def export_cmd(
    run: Path = typer.Argument(..., help="run directory"),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="write the ONNX files (--no-onnx: only fit the ladder)"),
    int8: bool = typer.Option(False, "--int8", help="also write a static int8 model calibrated on training images"),
    int8_method: str = typer.Option(
        "auto",
        "--int8-method",
        help="nncf (post-training, bias-corrected) | ort (ONNX Runtime MinMax) | qat (quantization-aware"
        " fine-tuning in PyTorch, distilled from fp32, stem fp32, exported as QDQ) | auto: nncf if installed",
    ),
    int8_fp32_stem: bool = typer.Option(
        False, "--int8-fp32-stem/--no-int8-fp32-stem", help="nncf: leave the stem (first convs) unquantized"
    ),
    int8_qat_epochs: float = typer.Option(4.0, "--int8-qat-epochs", help="qat: fine-tuning epochs"),
    int8_qat_lr: float = typer.Option(1e-4, "--int8-qat-lr", help="qat: SGD learning rate"),
    int8_max_drop: float = typer.Option(0.01, "--int8-max-drop", help="largest val top-1 drop for int8 to pass"),
    int8_max_auroc_drop: float = typer.Option(
        0.01, "--int8-max-auroc-drop", help="K+1 models: largest val sink-AUROC drop for int8 to pass"
    ),
    int8_accuracy_control: bool = typer.Option(
        True,
        "--int8-accuracy-control/--no-int8-accuracy-control",
        help="nncf: return quantizers to fp32 while int8 loses more than --int8-control-drop on training images",
    ),  # fmt: skip
    int8_control_drop: float | None = typer.Option(
        None, "--int8-control-drop", help="accuracy control: largest metric drop on training images (default: max drop)"
    ),
    int8_control_metric: str = typer.Option(
        "agreement",
        "--int8-control-metric",
        help="accuracy control metric: agreement (with fp32) | top1 (labelled ID rows)",
    ),
    int8_control_samples: int = typer.Option(5000, "--int8-control-samples", help="accuracy control: training images"),
    int8_control_iterations: int = typer.Option(
        30, "--int8-control-iterations", help="accuracy control: most rounds of ranking and reverting quantizers"
    ),
    backends: bool = typer.Option(True, "--backends/--no-backends", help="record parity and timing per runtime"),
    backend_timing: float = typer.Option(1.0, "--backend-timing", help="seconds per timed row (0: no timing)"),
    dynamic: bool = typer.Option(True, "--dynamic/--no-dynamic", help="also write a dynamic-batch fp32 model"),
    weights: str = typer.Option("best", help="best | final"),
    index: Path | None = typer.Option(None, "--index", help="dataset directory (default: the run's own)"),
    atol: float = typer.Option(1e-3, help="parity tolerance: max |logit difference| PyTorch vs ONNX Runtime"),
    ladder: bool = typer.Option(True, "--ladder/--no-ladder", help="fit the strictness ladder into RUN/ladder.json"),
    target_accept: float = typer.Option(0.95, help="ladder: fraction of ID validation samples to accept"),
    ood_index: Path | None = typer.Option(None, "--ood-index", help="OOD dataset whose val split reports rejection"),
    ladder_style_views: int = typer.Option(
        0,
        "--ladder-style-views",
        help="ladder: place the thresholds on clean val plus this many views of each val image with another stroke"
        " thickness or rendering resolution (the 'style' augmentation), so --target-accept holds over drawing"
        " styles, not only the clean one (0: clean val only)",
    ),
    ladder_signal: str = typer.Option(
        "auto",
        "--ladder-signal",
        help="ladder: score thresholded by t1/t2: maxlogit | energy | msp | sink (K+1 models: log-odds against the"
        " sink) | knn (penultimate features, needs export/model_features.onnx) | rmd (relative Mahalanobis on the"
        " same features, fitted on the ID train rows and their style views) | fused (mean of maxlogit, sink and"
        " rmd, or knn without rmd, each standardized on clean ID val; needs a sink or a feature score) | auto"
        " (highest val AUROC against the OOD val rows: a merged index's sink rows or --ood-index, sink and fused"
        " included for K+1 models, knn and rmd when the features file exists; maxlogit without them)",
    ),
) -> None:
    """ONNX export with a parity check on validation images, optional int8, and the ladder fit (RUN/export/)."""
    from stillroom.deploy.ladder import ALL_SIGNALS

    _check_number("--atol", atol, 0.0, 1e3, low_open=True)
    _check_number("--int8-control-samples", int8_control_samples, 1, 1e7)
    _check_number("--int8-control-iterations", int8_control_iterations, 1, 1e4)
    _check_number("--int8-qat-epochs", int8_qat_epochs, 0.0, 1e3, low_open=True)
    _check_number("--int8-qat-lr", int8_qat_lr, 0.0, 1.0, low_open=True)
    _check_number("--target-accept", target_accept, 0.0, 1.0, low_open=True)
    _check_number("--ladder-style-views", ladder_style_views, 0, 64)
    if ladder_signal not in (*ALL_SIGNALS, "auto"):  # before the export, which takes a while
        raise StillroomError(f"--ladder-signal {ladder_signal!r}: must be one of {', '.join((*ALL_SIGNALS, 'auto'))}")
    if onnx:
        from stillroom.deploy.onnx_export import export_onnx

        rep = export_onnx(
            run, weights=weights, dynamic=dynamic, int8=int8, index=index, atol=atol, int8_method=int8_method,
            int8_max_drop=int8_max_drop, int8_max_auroc_drop=int8_max_auroc_drop,
            int8_accuracy_control=int8_accuracy_control,
            int8_control_drop=int8_control_drop, int8_control_metric=int8_control_metric,
            control_samples=int8_control_samples, int8_control_iterations=int8_control_iterations, backends=backends,
            backend_timing=backend_timing, int8_fp32_stem=int8_fp32_stem, int8_qat_epochs=int8_qat_epochs,
            int8_qat_lr=int8_qat_lr,
        )  # fmt: skip
        table = Table(title=f"{run}/export (parity on {rep['parity']['fp32']['n']} val images)")
        for col in ("model", "max |diff|", "top-1 agreement", "sha256"):
            table.add_column(col)
        for key, entry in rep["models"].items():
            par = rep["parity"].get(key) or rep.get("int8_check", {})
            table.add_row(
                entry["file"], f"{par['max_abs_diff']:.2e}", f"{par['top1_agreement']:.4f}", entry["sha256"][:12]
            )
        console.print(table)
        feats = rep.get("features") or {}
        if "skipped" in feats:
            console.print(f"no features model (knn signal unavailable): {feats['skipped']}", markup=False)
        elif feats:
            fp = feats["parity"]
            console.print(
                f"{feats['file']}: logits + {feats['feature_dim']} features, max |diff| logits "
                f"{fp['logits']['max_abs_diff']:.2e}, features {fp['features']['max_abs_diff']:.2e} "
                + ("ok" if feats["ok"] else f"FAILED (> {fp['atol']:g}: knn will not be served)"),
                markup=False,
            )
        chk = rep.get("int8_check")
        if chk:
            mark = "[green]ok[/]" if chk["ok"] else "[red]FAILED (int8 will not be served)[/]"
            from stillroom.deploy.onnx_export import int8_check_summary

            per_split = int8_check_summary(chk)
            console.print(
                f"int8 check ({chk.get('method', 'ort')}) {mark}: top-1 {per_split} "
                f"(limit {100 * chk['max_drop']:.1f} pt on val)"
            )
            if "sink" in chk:
                sk = chk["sink"]
                console.print(
                    f"int8 sink AUROC (val): {sk['auroc_fp32']:.4f} fp32 vs {sk['auroc_int8']:.4f} int8 "
                    f"(limit {sk['max_auroc_drop']:.3f})"
                )
        fastest = rep.get("backends", {}).get("fastest", {})
        if fastest:
            console.print(
                "fastest passing backend (short timing, load "
                f"{rep['backends']['load_before']}): "
                + "; ".join(
                    f"batch {b}: {f['backend']} {f['model']} {f['median_ms']:.3f} ms" for b, f in fastest.items()
                )
            )
    if ladder:
        from stillroom.deploy.run_ladder import fit_run_ladder

        lad = fit_run_ladder(
            run, target_accept=target_accept, weights=weights, index=index, ood_index=ood_index, signal=ladder_signal,
            style_views=ladder_style_views,
        )  # fmt: skip
        s = lad.fit_summary_
        views = f" (clean + {ladder_style_views} style views each)" if ladder_style_views else ""
        msg = f"[green]ladder[/] {lad!r}: ID val{views} accept {s['id']['accept']:.3f}"
        if "ood" in s:
            msg += f", OOD val reject {s['ood']['reject']:.3f} (accept {s['ood']['accept']:.3f})"
        console.print(msg + f" -> {Path(run) / 'ladder.json'}")
        console.print(f"ladder signal {lad.signal_}: {s['signal']['reason']}", markup=False)
        cand = s["signal"].get("knn_candidate") or {}
        if ladder_signal == "auto" and not cand.get("weighed", True):
            console.print(f"knn not weighed: {cand.get('reason')}", markup=False)
        # an int8 model that may be served gets its own ladder and temperature, fitted on its own logits (issue 15)
        exp_path = Path(run) / "export" / "export.json"
        if exp_path.is_file() and read_json(exp_path).get("int8_check", {}).get("ok"):
            from stillroom.deploy.run_ladder import LADDER_FILES

            signal8 = "auto" if lad.uses_features else ladder_signal  # int8 features are not exported
            if signal8 != ladder_signal:
                console.print(
                    f"int8 ladder: feature scores are served in fp32 only; the int8 ladder takes auto instead of "
                    f"{lad.signal_} (logit signals, fused without a feature part)"
                )
            lad8 = fit_run_ladder(
                run, target_accept=target_accept, weights=weights, index=index, ood_index=ood_index, served="int8",
                signal=signal8, style_views=ladder_style_views,
            )  # fmt: skip
            s8 = lad8.fit_summary_
            console.print(
                f"[green]int8 ladder[/] {lad8!r}: ID val accept {s8['id']['accept']:.3f} -> "
                f"{Path(run) / LADDER_FILES['int8']} (and the int8 temperature in calibration.json)"
            )


def bench_latency_cmd(
    run: Path | None = typer.Argument(None, help="exported run directory (or use --arch for an untrained model)"),
    arch: str | None = typer.Option(None, help="benchmark an untrained model of this architecture instead"),
    img_size: int = typer.Option(128, help="--arch: input side"),
    in_chans: int = typer.Option(1, help="--arch: input channels"),
    num_classes: int = typer.Option(151, help="--arch: classes"),
    threads: int = typer.Option(2, help="threads for PyTorch and ONNX Runtime"),
    batch: list[int] = typer.Option([1, 64], "--batch", help="batch sizes (repeat the flag)"),
    warmup: int = typer.Option(20, help="untimed calls before timing (batch 1; a tenth for larger batches)"),
    repeats: int = typer.Option(200, help="timed calls per row at most"),
    max_seconds: float = typer.Option(10.0, help="time budget per row"),
    md: str = typer.Option("BENCHMARKS.md", "--md", help="BENCHMARKS.md to update ('' to skip)"),
) -> None:
    """Batch-1 / batch-64 latency of PyTorch eager vs ONNX Runtime fp32 and int8 -> table in BENCHMARKS.md."""
    bounds = [
        ("--threads", threads, 1, MAX_THREADS),
        ("--warmup", warmup, 0, 1e6),
        ("--repeats", repeats, 1, 1e6),
        ("--img-size", img_size, 8, 8192),
        ("--in-chans", in_chans, 1, 64),
        ("--num-classes", num_classes, 2, 1e6),
    ]
    for option, value, low, high in bounds:
        _check_number(option, value, low, high)
    for b in batch:
        _check_number("--batch", b, 1, 1e5)
    _check_number("--max-seconds", max_seconds, 0.0, 1e6, low_open=True)
    from stillroom.deploy.latency import bench_arch, bench_run, update_benchmarks_md

    if (run is None) == (arch is None):
        raise StillroomError("give either a RUN directory or --arch NAME (untrained), not both or neither")
    kw = dict(batch_sizes=batch, threads=threads, warmup=warmup, repeats=repeats, max_seconds=max_seconds)
    if run is not None:
        res = bench_run(run, **kw)
        from stillroom._io import atomic_write_json

        atomic_write_json(run / "export" / "latency.json", res)
    else:
        res = bench_arch(arch, img_size=img_size, in_chans=in_chans, num_classes=num_classes, **kw)
    table = Table(title=f"{res['config']['arch']} ({res['config']['weights']}), {threads} threads")
    for col in ("backend", "batch", "median ms", "p95 ms", "img/s", "runs"):
        table.add_column(col, justify="right")
    for r in res["results"]:
        table.add_row(r["backend"], str(r["batch"]), f"{r['median_ms']:.3f}", f"{r['p95_ms']:.3f}",
                      f"{r['throughput_img_s']:.0f}", str(r["runs"]))  # fmt: skip
    console.print(table)
    console.print(f"load average before {res['load_before']}, after {res['load_after']}")
    if md:
        update_benchmarks_md(md, res, _command_line())
        console.print(f"[green]updated[/] {md}")


def serve_cmd(
    run: Path = typer.Argument(..., help="exported run directory (stillroom export RUN --onnx)"),
    host: str = typer.Option("127.0.0.1", help="interface to bind (0.0.0.0 exposes the service to the network)"),
    port: int = typer.Option(8000, help="TCP port"),
    db: Path | None = typer.Option(None, "--db", help="telemetry SQLite file (default RUN/telemetry.sqlite)"),
    int8: bool = typer.Option(False, "--int8", help="serve the int8 model (must have passed its accuracy check)"),
    threads: int | None = typer.Option(None, help="runtime intra-op threads (default: the runtime's choice)"),
    backend: str = typer.Option(
        "auto", "--backend", help="onnxruntime | openvino | auto: the fastest at batch 1 that passed export's checks"
    ),
    max_upload_mb: float = typer.Option(5.0, help="largest accepted upload, MiB (> 0, at most 1024)"),
    max_pixels: int = typer.Option(4096 * 4096, help="largest accepted image, width x height (1 .. 89478485)"),
    no_store_inputs: bool = typer.Option(False, "--no-store-inputs", help="keep only the silhouette in telemetry"),
) -> None:
    """Serve predictions over HTTP (FastAPI; ONNX Runtime or OpenVINO) with the ladder, a page and SQLite telemetry."""
    from stillroom.data.preprocess import MAX_IMAGE_PIXELS

    _check_number("--port", port, 1, 65535)
    _check_number("--threads", threads, 1, MAX_THREADS)
    _check_number("--max-upload-mb", max_upload_mb, 0.0, MAX_UPLOAD_MB_LIMIT, low_open=True)
    _check_number("--max-pixels", max_pixels, 1, MAX_IMAGE_PIXELS)
    if int(max_upload_mb * 1024 * 1024) < 1:
        raise StillroomError(f"--max-upload-mb {max_upload_mb!r}: under one byte")

    import uvicorn

    from stillroom.deploy.service import create_app

    app = create_app(
        run, db_path=db, max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_pixels,
        model="int8" if int8 else "fp32", threads=threads, store_inputs=not no_store_inputs, backend=backend,
    )  # fmt: skip
    rt = app.state.predictor.runtime
    console.print(f"runtime: {rt['backend']} {rt['version']} ({rt['model']}; {rt['reason']})")
    console.print(f"serving {run} on http://{host}:{port}/ (telemetry: {app.state.telemetry.path})")
    uvicorn.run(app, host=host, port=port, log_level="info")


def feedback_export_cmd(
    db: Path = typer.Argument(..., help="telemetry SQLite file written by `stillroom serve`"),
    out: Path = typer.Option(..., "--out", help="folder to write (an ImageFolder for `data import-folder`)"),
    include_confirmed: bool = typer.Option(False, help="also export confirmed accepted predictions"),
    uncertain: bool = typer.Option(
        True, "--uncertain/--no-uncertain", help="unanswered uncertain ones to .unlabelled/"
    ),
    not_species_class: str | None = typer.Option(None, help="class folder for 'not a species' answers (else skipped)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing non-empty --out"),
) -> None:
    """Corrected and uncertain predictions as a new dataset folder (seed 000 §4.3)."""
    from stillroom.deploy.feedback_export import export_feedback

    man = export_feedback(db, out, include_uncertain=uncertain, include_confirmed=include_confirmed,
                          not_species_class=not_species_class, overwrite=overwrite)  # fmt: skip
    console.print(
        f"[green]wrote[/] {out}: {man['labelled']} labelled in {len(man['classes'])} class folder(s), "
        f"{man['unlabelled']} unlabelled in {out}/.unlabelled; skipped {man['skipped'] or 'none'}"
    )
    console.print(f"next: {man['import_with']}")


def register(app: typer.Typer) -> None:
    """Add ``export``, ``bench-latency``, ``serve`` and the ``feedback`` group (``feedback export``) to ``app``."""
    app.command("export")(export_cmd)
    app.command("bench-latency")(bench_latency_cmd)
    app.command("serve")(serve_cmd)
    feedback_app = typer.Typer(help="User feedback collected by `stillroom serve`.", no_args_is_help=True)
    feedback_app.command("export")(feedback_export_cmd)
    app.add_typer(feedback_app, name="feedback")
