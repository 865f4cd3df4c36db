"""`stillroom evaluate --ood-split` (REFERENCE 4), the ladder section (REFERENCE 5) and ID-only model selection of
K+1 students (seed 000 §2.4): a tiny K+1 run on drawn shapes with rings and bars as the OOD sink, checked against
numbers recomputed here from the stored weights' logits."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from stillroom._io import read_json
from stillroom.cli import app
from stillroom.config import config_from_dict
from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.data.merge import merge_with_sink
from stillroom.models.inference import predict_logits
from stillroom.runs import load_run

SCORE_NAMES = {"msp", "maxlogit", "energy", "odin", "sink"}
if importlib.util.find_spec("pytorch_ood") is not None:  # feature-based scores (evaluate.feature_ood)
    SCORE_NAMES |= {"knn", "ash", "scale", "rmd"}
ODIN_GRID = ["--odin-grid-T", "1", "--odin-grid-T", "1000", "--odin-grid-eps", "0", "--odin-grid-eps", "0.0014"]


@pytest.fixture(scope="module")
def merged(shapes_index, ood_only, tmp_path_factory: pytest.TempPathFactory):
    """4 shape classes + the sink (class 4)."""
    return merge_with_sink(shapes_index, ood_only, tmp_path_factory.mktemp("merged_os") / "merged")


@pytest.fixture(scope="module")
def open_run(merged, tiny_config, tmp_path_factory: pytest.TempPathFactory):
    """A K+1 student (target-dampened, kd_weight 0: no teacher needed to exercise the open-set plumbing)."""
    from stillroom.pipeline import train

    raw = tiny_config(
        merged.root, "student_open", epochs=3, loss={"name": "target_dampened", "params": {"kd_weight": 0.0}}
    )
    return train(config_from_dict(raw), tmp_path_factory.mktemp("open_runs") / "student_open")


def _logits(run, weights: str, index, rows: np.ndarray) -> np.ndarray:
    loaded = load_run(run, weights)
    return predict_logits(loaded.model, loaded.normalizer, load_images(index), rows)


def _log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]


def test_k_plus_one_selection_uses_id_val_rows_only(open_run, merged):
    log = _log(open_run)
    assert len(log) == 3 and all({"val_id_top1", "val_id_nll", "val_ood_rejection"} <= set(r) for r in log)
    state = read_json(open_run / "state.json")
    best = state["best"]
    assert best["selected_on"] == "val_id_top1"
    # the best epoch is the argmax of (ID top-1, -ID NLL), first one on ties
    want = max(log, key=lambda r: (r["val_id_top1"], -r["val_id_nll"]))
    assert best["epoch"] == want["epoch"] and best["val_id_top1"] == want["val_id_top1"]

    rows = merged.split_indices("val")
    labels = merged.labels[rows]
    is_id = labels < 4
    assert is_id.any() and (~is_id).any()
    z = _logits(open_run, "best", merged, rows)
    assert z.shape[1] == 5
    # argmax over all K+1 outputs on the ID rows: a sink prediction counts as an error
    assert log[best["epoch"] - 1]["val_id_top1"] == pytest.approx(float((z[is_id].argmax(1) == labels[is_id]).mean()))
    assert log[best["epoch"] - 1]["val_ood_rejection"] == pytest.approx(float((z[~is_id].argmax(1) == 4).mean()))


def test_closed_set_runs_log_no_id_only_fields(teacher_run):
    assert all("val_id_top1" not in r for r in _log(teacher_run))
    assert set(read_json(teacher_run / "state.json")["best"]) == {"epoch", "val_top1", "val_nll"}


@pytest.mark.filterwarnings("ignore:Ladder.fit.*unreachable")  # 3 tiny epochs: the sink eats ID val rows
def test_evaluate_ood_split_and_ladder_via_cli(open_run, merged, tmp_path):
    args = ["evaluate", str(open_run), "--split", "test", "--ood-split", "test", "--ladder", *ODIN_GRID]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "open set (test, best)" in res.output and "ladder (best" in res.output

    rows = merged.split_indices("test")
    labels = merged.labels[rows]
    is_ood = labels == 4
    n_id, n_ood = int((~is_ood).sum()), int(is_ood.sum())

    metrics = read_json(open_run / "metrics.json")
    ood = metrics["ood"]
    assert ood["file"] == "ood_metrics.json" and ood["split"] == "test" and set(ood["summary"]) == {"best", "final"}
    assert "scores" not in ood and "splits" not in ood  # `report` reads the full reports from the file only
    saved = read_json(open_run / "ood_metrics.json")
    for w in ("best", "final"):
        rep = saved["splits"]["test"][w]
        assert set(rep["scores"]) == SCORE_NAMES and rep["has_sink"] and rep["num_id_classes"] == 4
        assert (rep["n_id"], rep["n_ood"]) == (n_id, n_ood)
        for m in rep["scores"].values():
            for key in ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr"):
                assert 0.0 <= m[key] <= 1.0
        # the per-row scores behind the AUROCs are saved for reports (which never run the model)
        with np.load(open_run / rep["scores_file"], allow_pickle=False) as f:
            assert set(f.files) == SCORE_NAMES | {"is_ood"} and int(f["is_ood"].sum()) == n_ood
            assert f["msp"].shape == (n_id + n_ood,)
        conv = rep["conventions"]
        assert conv["orientation"] == "higher score = more in-distribution"
        assert conv["auroc_positive"] == "in-distribution" and conv["aupr_out_positive"].startswith("OOD")
        assert rep["odin"]["tuned_on"] == "val" and saved["odin_tuning"][w]["split"] == "val"
        assert len(saved["odin_tuning"][w]["grid"]) == 4
        assert ood["summary"][w]["auroc"] == {k: v["auroc"] for k, v in rep["scores"].items()}

        z = _logits(open_run, w, merged, rows)
        pred_id = z[~is_ood, :4].argmax(1)
        assert rep["closed_set"]["top1"] == pytest.approx(float((pred_id == labels[~is_ood]).mean()))
        assert rep["closed_set"]["top1_with_sink"] == pytest.approx(
            float((z[~is_ood].argmax(1) == labels[~is_ood]).mean())
        )
        assert rep["ood_rejection_rate"] == pytest.approx(float((z[is_ood].argmax(1) == 4).mean()))

    # ladder: fitted on val for the best weights, stored like `stillroom export` does, reported on test
    lad = metrics["ladder"]
    stored = read_json(open_run / "ladder.json")
    assert lad["weights"] == "best" and lad["target_accept"] == 0.95 == stored["target_accept"]
    assert lad["thresholds"]["t1"] == stored["t1"] and lad["thresholds"]["margin"] == stored["margin"]
    assert stored["members"][0]["sha256"] == metrics["weights"]["best"]["sha256"]
    test = lad["splits"]["test"]
    assert not test["in_sample"]
    assert sum(test["id"]["counts"].values()) == n_id == test["id"]["n"]
    assert sum(test["ood"]["counts"].values()) == n_ood == test["ood"]["n"]

    # the one-model ladder by hand (REFERENCE 5): sink wins -> reject; max ID logit < t1 -> reject;
    # top-1 margin >= margin -> accept; else uncertain
    z = _logits(open_run, "best", merged, rows)
    t1, margin = stored["t1"], stored["margin"]

    def verdicts(zz: np.ndarray) -> np.ndarray:
        ids = np.sort(zz[:, :4], axis=1)
        sink_top, mu, gap = zz.argmax(1) == 4, ids[:, -1], ids[:, -1] - ids[:, -2]
        return np.where(sink_top | (mu < t1), "reject", np.where(gap >= margin, "accept", "uncertain"))

    v_id, v_ood = verdicts(z[~is_ood]), verdicts(z[is_ood])
    assert test["id"]["counts"] == {v: int((v_id == v).sum()) for v in ("accept", "uncertain", "reject")}
    assert test["ood"]["counts"] == {v: int((v_ood == v).sum()) for v in ("accept", "uncertain", "reject")}
    assert test["id"]["coverage"] == pytest.approx((v_id == "accept").sum() / n_id)
    assert test["ood"]["acceptance"] == pytest.approx((v_ood == "accept").sum() / n_ood)
    acc = v_id == "accept"
    if acc.any():
        sel = float((z[~is_ood][acc, :4].argmax(1) == labels[~is_ood][acc]).mean())
        assert test["id"]["selective_accuracy"] == pytest.approx(sel)

    # downstream readers still find the reports
    res = CliRunner().invoke(app, ["ood-table", str(open_run), "--markdown", str(tmp_path / "t.md")])
    assert res.exit_code == 0, res.output
    assert "Sink 1 - p_sink" in (tmp_path / "t.md").read_text()
    from stillroom.report.html import _ood_reports

    assert len(_ood_reports(open_run, metrics)) == 2  # best + final, each once

    # a later plain `evaluate` keeps reporting the stored ladder (no --ladder needed)
    res = CliRunner().invoke(app, ["evaluate", str(open_run), "--split", "val", "--weights", "best"])
    assert res.exit_code == 0, res.output
    again = read_json(open_run / "metrics.json")["ladder"]
    assert again["splits"]["val"]["in_sample"] and again["thresholds"] == lad["thresholds"]
    assert again["splits"]["test"] == test  # the earlier split's section is kept


def test_closed_set_run_with_separate_ood_index(teacher_run, ood_only, shapes_index, tmp_path):
    run = tmp_path / "teacher_copy"  # the session's teacher run stays untouched
    shutil.copytree(teacher_run, run)
    (run / "ladder.json").unlink(missing_ok=True)
    args = ["evaluate", str(run), "--weights", "best", "--ood-split", "test", "--ood-index", str(ood_only.root)]
    res = CliRunner().invoke(app, [*args, "--ladder", *ODIN_GRID])
    assert res.exit_code == 0, res.output
    rep = read_json(run / "ood_metrics.json")["splits"]["test"]["best"]
    n_ood = len(load_index(ood_only.root).split_indices("test"))
    assert not rep["has_sink"] and set(rep["scores"]) == SCORE_NAMES - {"sink"} and "ood_rejection_rate" not in rep
    assert rep["n_ood"] == n_ood and rep["n_id"] == len(shapes_index.split_indices("test"))
    assert str(ood_only.root) in rep["ood_source"] and rep["odin"]["tuned_on"] == "val"
    lad = read_json(run / "metrics.json")["ladder"]["splits"]["test"]
    assert sum(lad["ood"]["counts"].values()) == n_ood and sum(lad["id"]["counts"].values()) == rep["n_id"]
    assert math.isclose(lad["id"]["coverage"], lad["id"]["counts"]["accept"] / rep["n_id"])


def test_ood_split_needs_ood_rows(teacher_run, tmp_path):
    run = tmp_path / "teacher_copy"
    shutil.copytree(teacher_run, run)
    res = CliRunner().invoke(app, ["evaluate", str(run), "--weights", "best", "--ood-split", "test"])
    assert res.exit_code != 0 and "not an ID + OOD index" in str(res.exception)


def test_scoring_a_second_ood_set_keeps_the_first(teacher_run, ood_only, shapes_index, tmp_path):
    """The run's own ID rows against two OOD sets, one after the other: ood_metrics.json holds the latest (what
    ood-table and report read), and each set's figures stay in a file named by that set, with its own scores."""
    from stillroom.data.index import IndexRow, write_index

    run = tmp_path / "teacher_copy"
    shutil.copytree(teacher_run, run)
    ood = load_index(ood_only.root)
    keep = [i for i in range(len(ood.paths)) if ood.splits[i] != "test" or i % 2 == 0]  # fewer test rows
    rows = [IndexRow(ood.paths[i], 0, "ood", ood.splits[i], ood.groups[i], ood.sha256[i]) for i in keep]
    shutil.copytree(ood.root, tmp_path / "half_ood")  # index paths are relative to the dataset directory
    half = write_index(tmp_path / "half_ood", rows, ["ood"], ood.recipe)
    n = {}
    for other in (ood, half):
        args = ["evaluate", str(run), "--weights", "best", "--ood-split", "test", "--no-tune-odin"]
        res = CliRunner().invoke(app, [*args, "--ood-index", str(other.root)])
        assert res.exit_code == 0, res.output
        name = f"ood_metrics_vs_{other.root.name}-{other.index_hash[:8]}.json"
        assert name in res.output
        n[name] = len(other.split_indices("test"))
    assert len(set(n.values())) == 2  # the two sets differ, so a copy of the wrong one would be seen
    for name, n_ood in n.items():
        rep = read_json(run / name)["splits"]["test"]["best"]
        assert rep["n_ood"] == n_ood and rep["scores_file"].endswith(name[len("ood_metrics_") : -len(".json")] + ".npz")
        assert len(np.load(run / rep["scores_file"])["is_ood"]) == rep["n_id"] + n_ood
    latest = read_json(run / "ood_metrics.json")["splits"]["test"]["best"]
    assert latest["n_ood"] == n[f"ood_metrics_vs_{half.root.name}-{half.index_hash[:8]}.json"]
    assert read_json(run / "metrics.json")["ood"]["source_file"].startswith(f"ood_metrics_vs_{half.root.name}")
    # ood-table reads one set's reports on request; a set never scored is an error that says how to score it
    tables = []
    for other in (ood, half):
        md = tmp_path / f"table_{other.root.name}.md"
        res = CliRunner().invoke(app, ["ood-table", str(run), "--ood-index", str(other.root), "--markdown", str(md)])
        assert res.exit_code == 0, res.output
        tables.append(md.read_text())
    assert tables[0] != tables[1] and f"vs {half.root}" in tables[1]
    res = CliRunner().invoke(app, ["ood-table", str(run), "--ood-index", str(shapes_index.root)])
    assert res.exit_code != 0 and "--ood-index OOD_DIR" in str(res.exception)
