"""``stillroom report``: one self-contained HTML file (inline CSS, data: images, no network) for a run, a directory
of runs (the demo layout) and a sweep; open-set figures only when open-set metrics exist."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from stillroom._io import StillroomError
from stillroom.pipeline.sweep import SUMMARY_COLUMNS
from stillroom.report.html import find_runs, write_html_report

_SMALL = ("*.safetensors", "confusion_*.npy")  # not needed by the report unless it recomputes OOD curves


class _Refs(HTMLParser):
    """Collects every URL-bearing attribute and the tags used."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data", "poster") and value is not None:
                self.refs.append((tag, name, value))


def _check_self_contained(text: str) -> _Refs:
    parser = _Refs()
    parser.feed(text)
    assert not parser.tags & {"script", "link", "iframe", "object", "embed"}
    for tag, name, value in parser.refs:
        if tag == "img":
            assert name == "src" and value.startswith("data:image/"), value[:60]
        else:
            assert name == "href" and value.startswith("#"), value  # in-page anchors only
    assert "http://" not in text and "https://" not in text and "url(" not in text
    return parser


def _copy_run(src: Path, dst: Path, weights: bool = False) -> Path:
    shutil.copytree(src, dst, ignore=None if weights else shutil.ignore_patterns(*_SMALL))
    return dst


def test_run_report_is_self_contained_and_complete(teacher_run, tmp_path):
    out = write_html_report(teacher_run, tmp_path / "report.html")
    text = out.read_text(encoding="utf-8")
    parser = _check_self_contained(text)
    assert sum(1 for t, _, _ in parser.refs if t == "img") >= 4  # curves, reliability x2, confused-pair images
    for heading in ("Results", "Data", "Training curves", "Per-class F1", "Confused pairs", "Reliability"):
        assert heading in text, heading
    assert "Stored temperatures" in text and "Wilson" in text
    assert "Open-set" not in text  # no open-set metrics for this run
    assert find_runs(teacher_run) == ("run", [teacher_run])


def test_runs_directory_like_the_demo(teacher_run, tmp_path):
    demo = tmp_path / "demo"
    for name in ("student_a", "student_b"):
        _copy_run(teacher_run, demo / "runs" / name)
    (demo / "report.md").write_text("# markdown report\n")
    kind, runs = find_runs(demo)
    assert kind == "runs" and [r.name for r in runs] == ["student_a", "student_b"]
    text = write_html_report(demo, demo / "report.html").read_text(encoding="utf-8")
    _check_self_contained(text)
    assert 'id="run-runs-student-a"' in text and 'id="run-runs-student-b"' in text
    assert text.count('<h3 id="data-') == 1  # both runs share one index: one data section


def test_reliability_is_drawn_from_metrics_when_the_png_is_missing(teacher_run, tmp_path):
    run = _copy_run(teacher_run, tmp_path / "run")
    shutil.rmtree(run / "plots")
    text = write_html_report(run, tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'alt="reliability diagram test best"' in text


def test_sweep_report_has_summary_ci_and_verdicts(teacher_run, tmp_path):
    sweep = tmp_path / "sweep"
    rows = []
    values = {"plain": [0.71, 0.712, 0.709], "kd": [0.72, 0.723, 0.721]}
    for variant, vals in values.items():
        for seed, v in enumerate(vals):
            run = _copy_run(teacher_run, sweep / variant / f"seed{seed}")
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "run_dir": str(run),
                    "test_top1": v + 0.02,
                    "test_macro_f1": v,
                    "test_nll": 0.9,
                    "test_ece": 0.05,
                    "test_ece_ts": 0.03,
                }
            )
    with open(sweep / "results_summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    kind, runs = find_runs(sweep)
    assert kind == "sweep" and len(runs) == 6
    text = write_html_report(sweep, tmp_path / "sweep.html").read_text(encoding="utf-8")
    _check_self_contained(text)
    assert "Sweep: variants x seeds" in text and "0.7103 ± 0.0015" in text  # plain: mean ± sample std
    assert "CI [" in text and "Each variant against plain" in text
    assert "little power" in text and "in favour of kd" in text


def test_open_set_section_only_with_open_set_metrics(teacher_run, shapes_index, tmp_path):
    run = _copy_run(teacher_run, tmp_path / "run", weights=True)
    scores = {name: {"auroc": 0.8, "aupr_in": 0.9, "aupr_out": 0.6, "fpr_at_95_tpr": 0.5} for name in ("msp", "sink")}
    report = {
        "split": "test",
        "weights": "best",
        "index": str(shapes_index.root),
        "num_id_classes": 3,
        "n_id": 36,
        "n_ood": 12,
        "scores": scores,
    }
    (run / "ood_metrics.json").write_text(json.dumps({"splits": {"test": {"best": report}}}))
    # without the per-row scores file the tables stay and the curves say how to get them; the model is never run
    text = write_html_report(run, tmp_path / "ood.html").read_text(encoding="utf-8")
    _check_self_contained(text)
    assert "Open-set recognition" in text and "FPR@95TPR" in text
    assert 'alt="ROC curves"' not in text and "no per-row scores saved" in text
    # with the file evaluation writes (ood_scores_<split>_<weights>.npz), curves are drawn from it alone
    rng = np.random.default_rng(0)
    is_ood = np.r_[np.zeros(36, bool), np.ones(12, bool)]
    np.savez(run / "ood_scores_test_best.npz", is_ood=is_ood, msp=rng.random(48), sink=rng.random(48) - is_ood)
    report["scores_file"] = "ood_scores_test_best.npz"
    (run / "ood_metrics.json").write_text(json.dumps({"splits": {"test": {"best": report}}}))
    (run / "best.safetensors").unlink()  # reports read files evaluation wrote, never the model
    text = write_html_report(run, tmp_path / "ood2.html").read_text(encoding="utf-8")
    assert 'alt="ROC curves"' in text and 'alt="scores"' in text


def test_report_errors_and_cli(teacher_run, tmp_path):
    from stillroom.cli.evaluate import register

    with pytest.raises(StillroomError, match="no finished run"):
        write_html_report(tmp_path, tmp_path / "x.html")
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["report", str(teacher_run), "-o", str(tmp_path / "cli.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium for a headless render")
def test_renders_in_headless_chromium(teacher_run, tmp_path):
    html = write_html_report(teacher_run, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--screenshot={shot}",
            "--window-size=1280,3000",
            html.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 3000) and len(im.getcolors(1 << 16) or range(1000)) > 20  # not a blank page
