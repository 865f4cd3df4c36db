"""The trade-off both demo reports open with (issue 14 item 6): ``evaluate.tradeoff`` measures teachers, their
ensemble and students (parameters, weights size, batch-1 CPU latency, test accuracy, share of the ensemble's top-1
kept, leakage probe) into ``tradeoff.json``; ``report.markdown`` and ``report.html`` only read it."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import softmax

from stillroom._io import StillroomError, read_json
from stillroom.data.index import load_index
from stillroom.evaluate.tradeoff import (
    TRADEOFF_FILE,
    TRADEOFF_FORMAT,
    batch1_latency,
    count_parameters,
    ensemble_probabilities,
    measure_tradeoff,
    share_kept,
)
from stillroom.report._tradeoff import TITLE, read_tradeoff, stale_runs, tradeoff_notes, tradeoff_table
from stillroom.report.html import write_html_report
from stillroom.report.markdown import write_demo_report
from stillroom.runs import Run

# --- pure parts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("student", "ensemble", "expected"),
    [(0.6, 0.8, 0.75), (0.8, 0.8, 1.0), (0.9, 0.6, 1.5), (0.0, 0.5, 0.0), (None, 0.8, None), (0.5, None, None)],
)
def test_share_kept_is_student_over_ensemble(student, ensemble, expected):
    got = share_kept(student, ensemble)
    assert got == expected if expected is None else got == pytest.approx(expected)


def test_share_kept_degenerate_and_bad_input():
    with pytest.warns(UserWarning, match="top-1 is 0"):
        assert math.isnan(share_kept(0.5, 0.0))
    for bad in (1.5, -0.1, "0.5"):
        with pytest.raises(StillroomError, match="ensemble_top1 must be a fraction"):
            share_kept(0.5, bad)


def test_ensemble_is_the_mean_softmax_of_the_first_k_columns():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(7, 5)).astype(np.float32)
    got = ensemble_probabilities([a, b], num_classes=4)  # a 5th (sink) column is left out
    ref = (softmax(a[:, :4].astype(np.float64), axis=1) + softmax(b[:, :4].astype(np.float64), axis=1)) / 2
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    with pytest.raises(StillroomError, match="one N"):
        ensemble_probabilities([a, b[:3]], num_classes=4)
    with pytest.raises(StillroomError, match="no teacher logits"):
        ensemble_probabilities([], num_classes=4)


def test_parameters_and_latency_of_a_tiny_model():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).eval()
    assert count_parameters(model) == 1 * 2 * 9 + 2 + 2 + 2  # conv weight + bias, BN weight + bias; no buffers
    lat = batch1_latency(model, torch.zeros(1, 1, 8, 8), seconds=0.02, warmup_seconds=0.0)
    assert lat["median_ms"] > 0 and lat["p90_ms"] >= lat["median_ms"] and lat["runs"] >= 5
    with pytest.raises(StillroomError, match=r"shape \(1, C, S, S\)"):
        batch1_latency(model, torch.zeros(2, 1, 8, 8))


# --- measured on a trained run ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_dir(teacher_run, shapes_index, tmp_path_factory):
    """A demo-like directory: runs/ with two "teachers" and one "student" (copies of the session's teacher run) and
    the tradeoff.json measured on them."""
    root = tmp_path_factory.mktemp("demo_tradeoff")
    for name in ("teacher_a", "teacher_b", "student"):
        shutil.copytree(teacher_run, root / "runs" / name)
    teachers = {"teacher A": root / "runs/teacher_a", "teacher B": root / "runs/teacher_b"}
    measure_tradeoff(
        teachers, {"student": root / "runs/student"}, shapes_index, root / TRADEOFF_FILE, latency_seconds=0.05
    )
    return root


def test_tradeoff_rows_fields_and_accuracy(demo_dir, shapes_index):
    data = read_json(demo_dir / TRADEOFF_FILE)
    assert data["format"] == TRADEOFF_FORMAT and data["split"] == "test" and data["weights"] == "best"
    assert [r["role"] for r in data["rows"]] == ["teacher", "teacher", "ensemble", "student"]
    assert data["latency"]["threads"] == torch.get_num_threads() >= 1
    model = Run(demo_dir / "runs/student").load("best", "cpu").model
    for r in data["rows"]:
        assert r["parameters"] > 0 and r["weights_bytes"] > 0 and r["latency_ms"]["median_ms"] > 0
        assert r["n"] == len(shapes_index.split_indices("test"))
        if r["run"] is not None:  # equal to what evaluation wrote into the run's metrics.json
            rep = read_json(Path(r["run"]) / "metrics.json")["splits"]["test"]["best"]
            assert (r["top1"], r["macro_f1"]) == (rep["top1"], rep["macro_f1"])
            assert r["parameters"] == count_parameters(model)
            assert r["weights_bytes"] == (Path(r["run"]) / "best.safetensors").stat().st_size
    assert all(len(r["weights_sha256"]) == 64 for r in data["rows"] if r["run"] is not None)
    teacher, ensemble, student = data["rows"][0], data["rows"][2], data["rows"][3]
    # two identical teachers: the ensemble is that teacher; sizes and latency are sums of the members'
    assert ensemble["top1"] == pytest.approx(teacher["top1"]) and ensemble["members"] == ["teacher A", "teacher B"]
    assert ensemble["parameters"] == 2 * teacher["parameters"]
    assert ensemble["weights_bytes"] == 2 * teacher["weights_bytes"]
    medians = [r["latency_ms"]["median_ms"] for r in data["rows"][:2]]
    assert ensemble["latency_ms"]["median_ms"] == pytest.approx(sum(medians))
    assert student["share_of_ensemble_top1"] == pytest.approx(student["top1"] / ensemble["top1"])
    assert teacher["share_of_ensemble_top1"] is None and ensemble["share_of_ensemble_top1"] is None
    # the synthetic index has no probe in index.json, so the step computed it on the same split
    probe = data["leakage_probe"]
    assert probe["split"] == "test" and 0 <= probe["accuracy"] <= 1 and probe["n"] == student["n"]
    assert "computed" in probe["source"]


def test_one_teacher_has_no_ensemble_row_and_students_keep_a_share_of_it(teacher_run, shapes_index, tmp_path):
    """The demo distils one teacher: an "ensemble" of one would repeat it, so the row is left out and the student's
    share is of the teacher's top-1."""
    student = Path(shutil.copytree(teacher_run, tmp_path / "student"))
    with torch.no_grad():  # a worse student: scale the classifier's logits of half the classes down
        from safetensors.torch import load_file, save_file

        weights = load_file(student / "best.safetensors")
        name = [k for k in weights if weights[k].ndim == 2][-1]  # the last linear layer
        weights[name][: weights[name].shape[0] // 2] *= 0.0
        save_file(weights, student / "best.safetensors")
    data = measure_tradeoff({"teacher": teacher_run}, {"student": student}, shapes_index, latency_seconds=0.05)
    assert [r["role"] for r in data["rows"]] == ["teacher", "student"]
    teacher, kept = data["rows"]
    assert kept["top1"] < teacher["top1"]
    assert kept["share_of_ensemble_top1"] == pytest.approx(kept["top1"] / teacher["top1"])
    header, rows = tradeoff_table(data)
    assert header[-1] == "share of teacher top-1 kept" and rows[1][-1] == f"{100 * kept['top1'] / teacher['top1']:.1f}%"
    notes = " ".join(tradeoff_notes(data))  # the altered student is also flagged out of date, rightly
    assert "one teacher: no ensemble" in notes and notes.startswith("Out of date: the weights of student")


def test_report_notices_weights_changed_since(demo_dir):
    data = read_json(demo_dir / TRADEOFF_FILE)
    assert stale_runs(data) == [] and not tradeoff_notes(data)[0].startswith("Out of date")
    data["rows"][-1]["weights_sha256"] = "0" * 64  # as if the student had been retrained after the measurement
    assert stale_runs(data) == ["student"]
    assert tradeoff_notes(data)[0].startswith("Out of date: the weights of student changed")


def test_tradeoff_scores_another_artists_set(teacher_run, shapes_index, tmp_path):
    """With a style set (same classes, drawn otherwise; the demo passes `data build style-icons`' set) every row
    gets its top-1 there, the ensemble too, and the table and notes show it beside the probe."""
    from stillroom.data.index import update_index_meta
    from stillroom.data.synthetic import build_shapes

    other = build_shapes(tmp_path / "other", n_per_class=8, size=32, num_classes=4, seed=11)
    update_index_meta(other.root, nn_probe={"test": {"accuracy": 0.25}})
    other = load_index(other.root)
    teachers = {"teacher A": teacher_run, "teacher B": teacher_run}
    data = measure_tradeoff(teachers, {"student": teacher_run}, shapes_index, latency_seconds=0.05, style_index=other)
    rows = other.split_indices("test")
    want = float((Run(teacher_run).logits("best", rows, other).argmax(1) == other.labels[rows]).mean())
    assert [r["style_top1"] for r in data["rows"]] == pytest.approx([want] * 4)
    assert data["style"]["n"] == len(rows) and data["style"]["nn_probe_top1"] == 0.25
    header, table = tradeoff_table(data)
    from stillroom.evaluate.stats import wilson_interval

    lo, hi = wilson_interval(round(want * len(rows)), len(rows))
    assert header[-1].startswith("another artist: top-1") and f"over its {len(rows)} images" in header[-1]
    assert table[0][-1] == f"{100 * want:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
    lo, hi = wilson_interval(round(0.25 * len(rows)), len(rows))
    assert table[-1][0].startswith("1-NN") and table[-1][-1] == f"25.0% [{100 * lo:.1f}, {100 * hi:.1f}]"
    assert 0 <= lo < 0.25 < hi <= 1
    assert any(n.startswith("Another artist") for n in tradeoff_notes(data))
    plain = tradeoff_table(measure_tradeoff(teachers, {}, shapes_index, latency_seconds=0.05))[0]
    assert not plain[-1].startswith("another artist")  # no style set: no column
    why = "every style is in training"  # the demo trains on all of them: the note says why there is no column
    skipped = measure_tradeoff(teachers, {}, shapes_index, latency_seconds=0.05, style_skipped=why)
    assert skipped["style_skipped"] == why and not tradeoff_table(skipped)[0][-1].startswith("another artist")
    assert f"Another artist: no style scored here: {why}." in tradeoff_notes(skipped)
    scored = measure_tradeoff(teachers, {}, shapes_index, latency_seconds=0.05, style_index=other, style_skipped=why)
    assert scored["style_skipped"] is None  # a scored style has nothing to excuse
    wrong = build_shapes(tmp_path / "wrong", n_per_class=4, size=32, num_classes=3, seed=1)
    with pytest.raises(StillroomError, match="classes differ"):
        measure_tradeoff(teachers, {}, shapes_index, style_index=wrong)


def test_tradeoff_refuses_bad_input(teacher_run, shapes_index, tmp_path):
    with pytest.raises(StillroomError, match="no runs given"):
        measure_tradeoff({}, {}, shapes_index)
    with pytest.raises(StillroomError, match="teacher and a student"):
        measure_tradeoff({"x": teacher_run}, {"x": teacher_run}, shapes_index)
    with pytest.raises(StillroomError, match="unknown split 'nope'"):
        measure_tradeoff({"x": teacher_run}, {}, shapes_index, split="nope")
    (tmp_path / TRADEOFF_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(StillroomError, match="not a trade-off file"):
        read_tradeoff(tmp_path)


# --- the reports open with it -----------------------------------------------------------------------------------


def _known(probe_acc: float = 0.9) -> dict:
    """A tradeoff.json with hand-picked numbers: ensemble top-1 0.80, students 0.60 and 0.70."""

    def row(label, role, top1, share=None, params=1_000_000, size=4_000_000, ms=2.0):
        return {
            "label": label,
            "role": role,
            "run": None,
            "parameters": params,
            "weights_bytes": size,
            "latency_ms": {"median_ms": ms},
            "top1": top1,
            "macro_f1": top1 - 0.05,
            "n": 100,
            "share_of_ensemble_top1": share,
        }

    return {
        "format": TRADEOFF_FORMAT,
        "split": "test",
        "weights": "best",
        "latency": {
            "backend": "PyTorch eager, fp32, CPU",
            "batch": 1,
            "threads": 2,
            "seconds_per_model": 1.0,
            "warmup_seconds": 0.3,
            "load_before": [0.5, 0, 0],
            "load_after": [0.7, 0, 0],
        },  # fmt: skip
        "leakage_probe": {"split": "test", "accuracy": probe_acc, "n": 100, "summary": "A 1-NN matcher gets it."},
        "rows": [
            row("teacher one", "teacher", 0.78, params=11_200_000, size=44_800_000, ms=6.0),
            row("teacher two", "teacher", 0.76, params=11_200_000, size=44_800_000, ms=6.5),
            row("teacher ensemble (mean softmax of 2)", "ensemble", 0.80, params=22_400_000, size=89_600_000, ms=12.5),
            row("student scratch", "student", 0.60, share=0.75, params=1_530_000, size=6_200_000, ms=3.1),
            row("student KD", "student", 0.70, share=0.875, params=1_530_000, size=6_200_000, ms=3.2),
        ],
    }


def test_table_formats_the_known_numbers():
    header, rows = tradeoff_table(_known())
    assert header[0] == "model" and "share of ensemble top-1 kept" in header and "test top-1" in header
    by = {r[0]: r for r in rows}
    assert by["student scratch"][1:] == ["1.53 M", "6.2 MB", "3.1 ms", "60.0%", "0.5500", "75.0%"]
    assert by["student KD"][-1] == "87.5%" and by["teacher one"][-1] == "–"
    assert by["teacher ensemble (mean softmax of 2)"][3] == "12.5 ms (sum)"
    assert rows[-1][0].startswith("1-NN pixel matcher") and rows[-1][4] == "90.0%"  # the probe, beside the models


def test_markdown_report_opens_with_the_tradeoff(teacher_run, shapes_index, tmp_path):
    (tmp_path / TRADEOFF_FILE).write_text(json.dumps(_known()))
    text = write_demo_report(tmp_path / "report.md", shapes_index, {"teacher": teacher_run}).read_text()
    lines = text.splitlines()
    assert lines[0] == "# Stillroom demo report"
    headings = [ln for ln in lines if ln.startswith("## ")]
    assert headings[0] == f"## {TITLE}" and headings[1] == "## Data"
    section = text.split(f"## {TITLE}")[1].split("## Data")[0]
    table = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 5 + 1  # header, rule, 5 models, the probe
    assert re.search(r"\| student scratch \| 1\.53 M \| 6\.2 MB \| 3\.1 ms \| 60\.0% \| 0\.5500 \| 75\.0% \|", section)
    assert "teacher ensemble" in section and "| 1-NN pixel matcher (leakage probe, learns nothing) |" in section
    assert "2 thread(s)" in section and "not a benchmark" in section
    assert "Leakage probe, beside every accuracy above: A 1-NN matcher gets it." in section
    assert "at least as well as every student" in section  # probe 90% >= best student 70%
    (tmp_path / TRADEOFF_FILE).write_text(json.dumps(_known(probe_acc=0.3)))
    text = write_demo_report(tmp_path / "report.md", shapes_index, {"teacher": teacher_run}).read_text()
    assert "at least as well as every student" not in text


def test_markdown_report_without_tradeoff_says_so(teacher_run, shapes_index, tmp_path):
    text = write_demo_report(tmp_path / "report.md", shapes_index, {"teacher": teacher_run}).read_text()
    assert text.splitlines()[2] == f"## {TITLE}" and "was not measured" in text


def test_html_report_opens_with_the_measured_tradeoff(demo_dir, shapes_index):
    text = write_html_report(demo_dir, demo_dir / "report.html").read_text(encoding="utf-8")
    start = text.index('<h2 id="tradeoff">')
    assert start < text.index("<nav>") < text.index('<h2 id="results">') < text.index('<h2 id="data">')
    assert text.index("<h2") == start  # the first section
    section = text[start : text.index("<nav>")]
    for label in ("teacher A", "teacher B", "teacher ensemble (mean softmax of 2)", "student", "1-NN pixel matcher"):
        assert f">{label}<" in section or f"<i>{label}" in section, label
    assert "share of ensemble top-1 kept" in section and "<code>stillroom bench-latency RUN</code>" in section
    assert '<a href="#tradeoff">' in text
    assert load_index(shapes_index.root).index_hash == read_json(demo_dir / TRADEOFF_FILE)["index_hash"]


def test_markdown_report_warns_when_the_students_lr_was_not_measured_for_their_network(
    teacher_run, shapes_index, tmp_path
):
    """``stillroom demo --student`` with a network that has no STUDENT_LR entry trains its scratch twin at an lr chosen
    for another network; the KD-over-scratch line says so, and only then."""
    runs = {"student scratch": teacher_run, "student KD": teacher_run}

    def kd_line(budget: dict) -> str:
        text = write_demo_report(tmp_path / "report.md", shapes_index, runs, budget=budget).read_text()
        return next(ln for ln in text.splitlines() if ln.startswith("KD over scratch"))

    base = {"student_model": "efficientnet_b0", "student_lr": 0.05}
    caveat = "chosen for another network than efficientnet_b0"
    assert caveat in kd_line({**base, "student_lr_tuned": False}) and "peak lr 0.05" in kd_line(
        {**base, "student_lr_tuned": False}
    )
    assert caveat not in kd_line({**base, "student_lr_tuned": True}) and caveat not in kd_line(base)


def test_markdown_report_says_whether_the_demo_kept_its_wall_time_budget(teacher_run, shapes_index, tmp_path):
    def wall(total_s: float, budget: dict) -> list[str]:
        text = write_demo_report(
            tmp_path / "report.md", shapes_index, {"teacher": teacher_run}, timings={"total": total_s}, budget=budget
        ).read_text()
        return [ln for ln in text.split("## Wall time")[1].splitlines() if ln.startswith("- budget")]

    assert wall(16.3 * 60, {"wall_minutes": 15}) == [
        "- budget: 15 min on the 2-core box; this run 16.3 min, over by 1.3 min"
    ]
    assert wall(14 * 60, {"wall_minutes": 15})[0].endswith("this run 14.0 min, within it")
    assert wall(14 * 60, {"wall_minutes": None}) == []  # quick and patient budgets promise no wall time
    planned = write_demo_report(
        tmp_path / "report.md", shapes_index, {"teacher": teacher_run}, timings={"total": 600.0},
        budget={"wall_minutes": 15, "plan": "24 teacher + 60 student epochs"},
    ).read_text()  # fmt: skip
    assert "- plan: 24 teacher + 60 student epochs" in planned.split("## Wall time")[1]
    text = write_demo_report(
        tmp_path / "report.md",
        shapes_index,
        {"teacher": teacher_run},
        timings={"total": 900.0},
        budget={"wall_minutes": 15},
        cpu_steal_share=0.3333,
    ).read_text()
    assert "(steal, /proc/stat): 33%" in text.split("## Wall time")[1]
    host = [ln for ln in text.split("## Wall time")[1].splitlines() if ln.startswith("- host: ")]
    assert len(host) == 1 and host[0].endswith("CPU cores; the teacher's training step ran in float32")


def test_cpu_model_from_cpuinfo(tmp_path):
    from stillroom._timing import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC  7B13 64-Core Processor\n")
    assert cpu_model(info) == "AMD EPYC 7B13 64-Core Processor"
    info.write_text("processor\t: 0\n")
    assert cpu_model(info) is None and cpu_model(tmp_path / "missing") is None


def test_steal_share_from_proc_stat(tmp_path):
    from stillroom._timing import cpu_times, steal_share

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 800 0 0 0 50 0 0\ncpu0 50 0 25 400 0 0 0 25 0 0\n")
    before = cpu_times(stat)
    assert before == (50, 1000)
    stat.write_text("cpu  160 0 70 900 0 0 0 120 0 0\n")
    assert steal_share(before, cpu_times(stat)) == 70 / 250
    assert cpu_times(tmp_path / "missing") is None and steal_share(None, before) is None
    stat.write_text("intr 1 2 3\n")
    assert cpu_times(stat) is None


def test_markdown_report_names_species_in_confused_pairs(teacher_run, shapes_index, tmp_path):
    from dataclasses import replace

    rep = json.loads((teacher_run / "metrics.json").read_text())["splits"]["test"]["best"]
    pairs, worst = rep.get("confused_pairs") or [], rep.get("worst_classes") or []
    assert pairs and worst  # the fixture teacher confuses some classes
    named = {c: f"Name of {c}" for c in shapes_index.classes}
    index = replace(shapes_index, meta={**shapes_index.meta, "display_names": named})
    section = write_demo_report(tmp_path / "r.md", index, {"student KD": teacher_run}).read_text()
    section = section.split("## Most confused pairs")[1]
    first = next(ln for ln in section.splitlines() if ln.startswith("| ") and "class a" not in ln)
    assert first.startswith(f"| Name of {pairs[0]['a']} | Name of {pairs[0]['b']} |")
    assert f"Name of {worst[0]['class']} " in section.split("Lowest per-class F1:")[1]
    plain = write_demo_report(tmp_path / "p.md", shapes_index, {"student KD": teacher_run}).read_text()
    assert f"| {pairs[0]['a']} | {pairs[0]['b']} |" in plain and "Name of" not in plain  # ids without names
