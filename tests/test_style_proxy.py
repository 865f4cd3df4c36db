"""Style proxies at the served ladder (issue 16 item 5, ``deploy.style_proxy``, ``stillroom style-proxy``).

Uses the session's ``teacher_run`` (K classes, drawn shapes at 32 px) in linked copies with ``ood_only`` (rings and
bars) as the OOD index, and one tiny K+1 run on the merged index for the sink path. Checks against independent
recomputations: the clean row against the ladder's own report, AUROCs against scikit-learn on scores computed here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from _deploy import link_run
from stillroom._io import StillroomError
from stillroom.config import config_from_dict

pytestmark = pytest.mark.filterwarnings("ignore:Ladder.fit.*unreachable")


@pytest.fixture(scope="module")
def run(teacher_run, tmp_path_factory):
    """A linked copy of the teacher run (its own ladder.json is never touched)."""
    return link_run(teacher_run, tmp_path_factory.mktemp("style") / "run")


@pytest.fixture(scope="module")
def fitted(run, ood_only):
    """The served maxlogit ladder (and structure gate) fitted on clean val into the copy's ladder.json."""
    from stillroom.deploy.run_ladder import fit_run_ladder

    return fit_run_ladder(run, ood_index=ood_only.root)


@pytest.fixture(scope="module")
def report(run, fitted, ood_only):
    from stillroom.deploy.style_proxy import style_proxy_report

    return style_proxy_report(run, split="val", ood_index=ood_only.root, names=["dilate-1", "erode-1"])


def _id_ood_images(run, ood_only, split="val"):
    from stillroom.data.dataset import load_images
    from stillroom.runs import Run

    the_run = Run(run)
    idx = the_run.index()
    rows = idx.split_indices(split)
    x_id = np.asarray(load_images(idx)[rows])
    x_ood = np.asarray(load_images(ood_only)[ood_only.split_indices(split)])
    return the_run, idx, rows, x_id, x_ood


def test_clean_row_is_the_ladders_own_operating_point(run, fitted, report, ood_only):
    from stillroom.deploy.run_ladder import run_ladder_report

    served = run_ladder_report(run, split="val", ood_index=ood_only.root)  # the gate first, as the service
    clean = report["rows"]["clean"]
    assert clean["id_accepted"] == pytest.approx(served["id"]["coverage"])
    assert clean["id_top1_accepted"] == pytest.approx(served["id"]["selective_accuracy"], nan_ok=True)
    assert clean["ood_rejected"] == pytest.approx(served["ood"]["rejection"])
    assert clean["id_n"] == served["id"]["n"] and clean["ood_n"] == len(ood_only.split_indices("val"))
    # without gate rejections of ID val rows the clean acceptance is the fitted one (the rules on the logits)
    if clean["id_gate_rejected"] == 0:
        assert clean["id_accepted"] == pytest.approx(fitted.fit_summary_["id"]["accept"])
    assert report["ladder"]["source"].endswith("ladder.json") and report["ladder"]["signal"] == "maxlogit"
    assert list(report["rows"]) == ["clean", "dilate-1", "erode-1"] and report["rows"]["clean"]["changed_pixels"] == 0


def test_auroc_equals_sklearn_on_scores_computed_here(run, fitted, report, ood_only):
    """Signal and served-order AUROC of the clean row and of one rewrite, recomputed from the model's logits."""
    from stillroom.data.outline import outline_from_recipe
    from stillroom.deploy.structure import served_features
    from stillroom.evaluate.shift import stroke
    from stillroom.models.inference import predict_logits

    the_run, idx, _, x_id, x_ood = _id_ood_images(run, ood_only)
    loaded = the_run.load("best")
    k = the_run.layout.num_id
    gate = fitted.structure_
    size, padding = int(loaded.meta["img_size"]), float(loaded.meta["recipe"].get("padding", 0.2))
    outline = outline_from_recipe(loaded.meta["recipe"])
    for name, fn in (("clean", lambda x: x), ("dilate-1", lambda x: stroke(x, 1))):  # 1 px at 32 px (1 at 64 / 2)
        ids, oods = fn(x_id), fn(x_ood)
        s_id, s_ood = (predict_logits(loaded.model, loaded.normalizer, x, np.arange(len(x)))[:, :k].max(1)
                       for x in (ids, oods))  # fmt: skip
        y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
        row = report["rows"][name]
        assert row["auroc_signal"] == pytest.approx(roc_auc_score(y, np.r_[s_id, s_ood]), abs=1e-12)
        ok_id, ok_ood = (gate.passes(served_features(x, np.arange(len(x)), size, padding, outline=outline))
                         for x in (ids, oods))  # fmt: skip
        low = min(s_id.min(), s_ood.min()) - 1.0  # sklearn refuses -inf: any value below every score ranks alike
        served = np.r_[np.where(ok_id, s_id, low), np.where(ok_ood, s_ood, low)]
        assert row["auroc_served"] == pytest.approx(roc_auc_score(y, served), abs=1e-12)
        assert row["id_gate_rejected"] == pytest.approx(1 - ok_id.mean())
        assert row["ood_gate_rejected"] == pytest.approx(1 - ok_ood.mean())
        # a gate refusal is a rejection whatever the logits (1 - mean vs a count ratio: allow float rounding)
        assert row["ood_rejected"] >= row["ood_gate_rejected"] - 1e-12


def test_identity_rewrite_gives_the_clean_numbers(run, fitted, report, ood_only):
    from stillroom.deploy.style_proxy import style_proxy_report

    rep = style_proxy_report(run, split="val", ood_index=ood_only.root, rewrite=lambda x, names: {"identity": x.copy()})
    same = {k: v for k, v in rep["rows"]["identity"].items() if k not in ("in_shape_recipe",)}
    assert same == {k: v for k, v in report["rows"]["clean"].items() if k != "in_shape_recipe"}
    s = rep["summary"]
    assert s["n_rewrites"] == 1 and s["id_accepted"]["min"] == s["id_accepted"]["mean"] == same["id_accepted"]
    assert s["auroc_served"]["min_at"] == "identity"


def test_summary_and_verdict_follow_the_rows(report):
    from stillroom.deploy.style_proxy import AUROC_BAR, ID_ACCEPT_BAR

    rows = {n: r for n, r in report["rows"].items() if n != "clean"}
    s = report["summary"]
    acc = [r["id_accepted"] for r in rows.values()]
    assert s["id_accepted"]["min"] == min(acc) and s["id_accepted"]["mean"] == pytest.approx(np.mean(acc))
    assert rows[s["id_accepted"]["min_at"]]["id_accepted"] == min(acc)
    v = s["verdict"]
    assert v["id_accept"]["worst_rewrite_met"] == (min(acc) >= ID_ACCEPT_BAR)
    au = [r["auroc_served"] for r in rows.values()]
    assert v["ood_auroc"]["mean_met"] == (np.mean(au) >= AUROC_BAR)
    assert v["ood_auroc"]["gap_worst"] == pytest.approx(min(au) - AUROC_BAR)


def test_fitted_signal_matches_the_saved_ladder_and_served_input(run, fitted, report, ood_only):
    from stillroom.deploy.style_proxy import style_proxy_report

    before = (run / "ladder.json").read_bytes()
    rep = style_proxy_report(run, split="val", ood_index=ood_only.root, names=["dilate-1"], signal="maxlogit")
    assert (run / "ladder.json").read_bytes() == before  # fitted, never saved
    assert rep["ladder"]["thresholds"] == report["ladder"]["thresholds"]
    assert rep["rows"]["dilate-1"] == report["rows"]["dilate-1"]
    srv = style_proxy_report(run, split="val", ood_index=ood_only.root, names=["dilate-1"], input_mode="served")
    # the gate sees the served silhouettes in both modes; only what the model sees differs
    for name in ("clean", "dilate-1"):
        assert srv["rows"][name]["id_gate_rejected"] == report["rows"][name]["id_gate_rejected"]


def test_errors(run, tmp_path, ood_only, fitted):
    from stillroom.deploy.style_proxy import style_proxy_report

    with pytest.raises(StillroomError, match="input must be one of dataset, served"):
        style_proxy_report(run, ood_index=ood_only.root, input_mode="upload")
    bare = link_run(run, tmp_path / "bare")
    with pytest.raises(StillroomError, match=r"ladder.json: not found"):
        style_proxy_report(bare, ood_index=ood_only.root)
    with pytest.raises(StillroomError, match="unknown shift rewrite 'blur'"):
        style_proxy_report(run, ood_index=ood_only.root, names=["blur"])


def test_cli_writes_and_merges_style_proxy_json(run, fitted, tmp_path, ood_only):
    import typer

    from stillroom.cli.evaluate import register

    app = typer.Typer()
    register(app)
    copy = link_run(run, tmp_path / "cli", extra=("ladder.json",))
    base = ["style-proxy", str(copy), "--ood-index", str(ood_only.root), "--rewrite", "fill-holes"]
    res = CliRunner().invoke(app, [*base, "--split", "val", "--split", "test"])
    assert res.exit_code == 0, res.output
    assert "id_accept (>= 0.9" in res.output and "ood_auroc (>= 0.95" in res.output
    res = CliRunner().invoke(app, [*base, "--ladder-signal", "energy"])
    assert res.exit_code == 0, res.output
    data = json.loads((copy / "style_proxy.json").read_text())
    assert set(data) == {"val/maxlogit/dataset/best", "test/maxlogit/dataset/best", "val/energy/dataset/best"}
    assert data["test/maxlogit/dataset/best"]["split"] == "test"
    assert set(data["val/energy/dataset/best"]["rows"]) == {"clean", "fill-holes"}
    # benchmarks/style_proxy.py tabulates the file: one line per (signal, input, split), numbers from the JSON
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "_bench_style_proxy", Path(__file__).resolve().parents[1] / "benchmarks" / "style_proxy.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lines = bench.table_rows(copy, ["val", "test"])
    assert len(lines) == 3 and all(line.count(" | ") == bench.HEADER.count(" | ") for line in lines)
    # one split asked for, while the file also holds the other: only its line (this used to raise ValueError)
    assert [line.split(" | ")[4] for line in bench.table_rows(copy, ["test"])] == ["test"]
    rep = data["val/maxlogit/dataset/best"]
    want = f"| cli | maxlogit | 0 | dataset | val | {100 * rep['rows']['clean']['id_accepted']:.1f} |"
    assert any(line.startswith(want) for line in lines)


@pytest.fixture(scope="module")
def open_run(shapes_index, ood_only, tiny_config, tmp_path_factory):
    """A K+1 run on the shapes merged with ``ood_only`` as the sink (3 epochs, no teacher)."""
    from stillroom.data.merge import merge_with_sink
    from stillroom.pipeline import train

    merged = merge_with_sink(shapes_index, ood_only, tmp_path_factory.mktemp("style_merged") / "merged")
    raw = tiny_config(
        merged.root, "student_open", epochs=3, loss={"name": "target_dampened", "params": {"kd_weight": 0.0}}
    )
    return train(config_from_dict(raw), tmp_path_factory.mktemp("style_open") / "run"), merged


def test_k_plus_one_uses_the_sink_rows_and_ranks_sink_wins_last(open_run):
    import torch

    from stillroom.data.dataset import load_images
    from stillroom.data.outline import outline_from_recipe
    from stillroom.deploy.run_ladder import fit_run_ladder, run_ladder_report
    from stillroom.deploy.structure import served_features
    from stillroom.deploy.style_proxy import style_proxy_report
    from stillroom.evaluate.ood import sink_score
    from stillroom.runs import Run

    run_dir, merged = open_run
    lad = fit_run_ladder(run_dir, signal="maxlogit")  # the served ladder of a K+1 run: OOD = the sink rows
    rep = style_proxy_report(run_dir, split="val", names=["erode-1"])
    rows = merged.split_indices("val")
    is_ood = merged.labels[rows] == merged.recipe["sink_class"]
    rows = np.r_[rows[~is_ood], rows[is_ood]]  # ID rows first, as the report orders them
    y = np.r_[np.ones((~is_ood).sum()), np.zeros(is_ood.sum())]
    clean = rep["rows"]["clean"]
    assert (clean["id_n"], clean["ood_n"]) == (int((~is_ood).sum()), int(is_ood.sum()))
    served = run_ladder_report(run_dir, split="val")
    assert clean["id_accepted"] == pytest.approx(served["id"]["coverage"])
    assert clean["ood_rejected"] == pytest.approx(served["ood"]["rejection"])
    the_run = Run(run_dir)
    z = the_run.logits("best", rows, merged)
    assert clean["auroc_sink"] == pytest.approx(roc_auc_score(y, sink_score(torch.from_numpy(z)).numpy()), abs=1e-12)
    # served order: a sink win or a gate refusal ranks below every other input, whatever its max logit
    k = the_run.layout.num_id
    ok = np.ones(len(rows), bool)
    if lad.structure_ is not None:
        recipe = the_run.meta["recipe"]
        ok = lad.structure_.passes(
            served_features(load_images(merged), rows, int(merged.recipe["size"]),
                            float(recipe.get("padding", 0.2)), outline=outline_from_recipe(recipe))
        )  # fmt: skip
    mu = z[:, :k].max(1)
    score = np.where((z.argmax(1) == k) | ~ok, mu.min() - 1.0, mu)
    assert clean["auroc_served"] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert clean["auroc_signal"] == pytest.approx(roc_auc_score(y, z[:, :k].max(1)), abs=1e-12)


def test_k_plus_one_run_offers_the_sink_signal_and_serves_it(open_run, tmp_path):
    # issue 16 item 5: a K+1 run's ladder can threshold the sink's log-odds; auto weighs it on the sink val rows
    from stillroom.deploy.ladder import Ladder
    from stillroom.deploy.run_ladder import fit_run_ladder, run_ladder_report
    from stillroom.runs import Run

    run_dir, merged = open_run
    copy = link_run(run_dir, tmp_path / "sink")
    rows = merged.split_indices("val")
    is_ood = merged.labels[rows] == merged.recipe["sink_class"]
    z = Run(copy).logits("best", np.r_[rows[~is_ood], rows[is_ood]], merged).astype(np.float64)  # as the ladder
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    log_odds = np.log1p(-p[:, -1]) - np.log(p[:, -1])  # reference: scipy-free, from the softmax over K + 1
    y = np.r_[np.ones((~is_ood).sum()), np.zeros(is_ood.sum())]
    auto = fit_run_ladder(copy, signal="auto", save=False).fit_summary_["signal"]
    assert auto["val_auroc"]["sink"] == pytest.approx(roc_auc_score(y, log_odds), abs=1e-9)
    lad = fit_run_ladder(copy, signal="sink")
    assert Ladder.load(copy / "ladder.json").signal_ == "sink" and lad.sink
    got = [d["score"] for d in lad.decide_detailed(z)]
    np.testing.assert_allclose(got, log_odds, rtol=1e-6, atol=1e-6)
    assert run_ladder_report(copy, split="val")["signal"] == "sink"


def test_k_plus_one_run_serves_the_fused_signal(open_run, tmp_path):
    # issue 16 items 3-4: without an export (no knn) a K+1 run's fused signal is the max logit and the sink log-odds,
    # each standardized on the ID val rows; the style proxy judges with it as served
    from stillroom.deploy.ladder import Ladder
    from stillroom.deploy.run_ladder import fit_run_ladder, run_ladder_report
    from stillroom.deploy.style_proxy import style_proxy_report
    from stillroom.runs import Run

    run_dir, merged = open_run
    copy = link_run(run_dir, tmp_path / "fused")
    lad = fit_run_ladder(copy, signal="fused")
    assert lad.fused_["parts"] == ["maxlogit", "sink"] and not lad.uses_knn
    rows = merged.split_indices("val")
    id_rows = rows[merged.labels[rows] != merged.recipe["sink_class"]]
    z = Run(copy).logits("best", id_rows, merged).astype(np.float64)
    parts = np.stack([z[:, :-1].max(1), logsumexp(z[:, :-1], axis=1) - z[:, -1]])  # reference, scipy
    mean, std = parts.mean(1), parts.std(1)
    np.testing.assert_allclose(lad.fused_["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(lad.fused_["std"], std, rtol=1e-6)
    want = ((parts - mean[:, None]) / std[:, None]).mean(0)
    np.testing.assert_allclose([d["score"] for d in lad.decide_detailed(z)], want, rtol=1e-6, atol=1e-6)
    assert Ladder.load(copy / "ladder.json").signal_ == "fused"
    served = run_ladder_report(copy, split="val")
    rep = style_proxy_report(copy, split="val", names=["erode-1"])
    assert served["signal"] == "fused" and rep["rows"]["clean"]["id_accepted"] == pytest.approx(
        served["id"]["coverage"]
    )


def _bench(name):
    """The module of ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        f"_bench_{name}", Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_loso_report_ladder_metrics_match_references(open_run):
    # benchmarks/openset_loso_report.py's ladder columns: the sink signal ranks as 1 - p_sink, the fused one (max logit
    # + sink) is the mean of the two scores standardized on the run's clean ID val rows; both recomputed here
    from stillroom.data.dataset import load_images
    from stillroom.runs import Run

    bench = _bench("openset_loso_report")
    run_dir, merged = open_run
    k = int(merged.recipe["sink_class"])
    images = np.asarray(load_images(merged))
    test, val = merged.split_indices("test"), merged.split_indices("val")
    id_t, ood_t, id_v = test[merged.labels[test] < k], test[merged.labels[test] == k], val[merged.labels[val] < k]
    got = bench.ladder_metrics(run_dir, images[id_t], images[ood_t])
    assert set(got) == {"sink", "fused_logits", "fused"}
    run = Run(run_dir)

    def parts(rows):
        z = run.logits("best", rows, merged).astype(np.float64)
        return np.stack([z[:, :k].max(1), logsumexp(z[:, :k], axis=1) - z[:, k]])

    pv, pi, po = parts(id_v), parts(id_t), parts(ood_t)
    mean, std = pv.mean(1, keepdims=True), pv.std(1, keepdims=True)
    y = np.r_[np.ones(len(id_t)), np.zeros(len(ood_t))]
    fused = np.r_[((pi - mean) / std).mean(0), ((po - mean) / std).mean(0)]
    assert got["fused_logits"]["auroc"] == pytest.approx(roc_auc_score(y, fused), abs=1e-9)
    assert got["sink"]["auroc"] == pytest.approx(roc_auc_score(y, np.r_[pi[1], po[1]]), abs=1e-9)
    assert 0.0 <= got["fused"]["auroc"] <= 1.0 and 0.0 <= got["fused"]["fpr_at_95_tpr"] <= 1.0


def test_style_accept_kp1_on_the_id_index_itself(open_run, shapes_index, ood_only):
    # benchmarks/style_accept_kp1.py with the run's own ID index as the "other style": its val rows are the rows the
    # ladder was fitted on, so their accepted share is the fit's own; its test rows are the ID test rows; the OOD
    # AUROC against ID test is the LOSO report's ladder AUROC of the same images
    from stillroom.data.dataset import load_images
    from stillroom.deploy.ladder import Ladder
    from stillroom.runs import Run

    bench, report = _bench("style_accept_kp1"), _bench("openset_loso_report")
    run_dir, merged = open_run
    got = bench.run_rows(run_dir, shapes_index.root, {"rings": ood_only.root}, ("sink", "fused"))
    k = int(merged.recipe["sink_class"])
    run = Run(run_dir)
    val, test = (r[merged.labels[r] < k] for r in (merged.split_indices(s) for s in ("val", "test")))
    z_val = run.logits("best", val, merged)
    lad = Ladder(sink=True, signal="sink").fit(z_val, target_accept=0.95)
    want_val = np.mean([v == "accept" for v, _ in lad.decide(z_val)])
    r = got["sink"]
    assert r["style_val"]["accepted"] == pytest.approx(want_val)
    assert r["style_test"]["accepted"] == pytest.approx(r["id_test"]["accepted"])
    z_test = run.logits("best", test, merged)
    assert r["style_test"]["top1"] == pytest.approx(float((z_test[:, :k].argmax(1) == merged.labels[test]).mean()))
    ood_test = np.asarray(load_images(ood_only))[ood_only.split_indices("test")]
    images = np.asarray(load_images(merged))
    want = report.ladder_metrics(run_dir, images[test], ood_test)
    for signal in ("sink", "fused"):
        assert got[signal]["rings"]["auroc_id_test"] == pytest.approx(want[signal]["auroc"], abs=1e-9)
    table = bench.markdown({"run": got}, ["rings"])
    assert table.count("\n") == 3 and "| run | sink |" in table and table.rstrip().endswith("|")


def test_ladder_placed_on_style_views(run, fitted, ood_only, tmp_path):
    """``style_views=V``: thresholds placed on the clean val logits plus those of V style views of each val image
    (recomputed here from ``style_views_of`` and the model), recorded in the ladder, keyed apart in the report."""
    from stillroom.data.dataset import load_images
    from stillroom.deploy._style_views import style_views_of
    from stillroom.deploy.ladder import Ladder
    from stillroom.deploy.run_ladder import fit_run_ladder
    from stillroom.deploy.style_proxy import report_key, style_proxy_report
    from stillroom.models.inference import predict_logits

    the_run, idx, rows, x_id, _ = _id_ood_images(run, ood_only)
    loaded = the_run.load("best")
    views = style_views_of(load_images(idx), rows, 2)  # view v of dataset row r: augment_rng(0, r, v)
    assert views.shape == (2 * len(x_id), *x_id.shape[1:]) and views.dtype == np.uint8
    assert (views != np.concatenate([x_id, x_id])).any()  # some views changed strokes or rendering
    lad = fit_run_ladder(run, ood_index=ood_only.root, save=False, style_views=2)
    cal = lad.fit_summary_["calibration"]
    assert cal["style_views"] == 2 and cal["augment"] == "style" and cal["id_fit_rows"] == 3 * cal["id_rows"]
    assert fitted.fit_summary_["calibration"] == {"style_views": 0, "id_rows": cal["id_rows"]}
    # the same thresholds from logits computed here: clean val rows of the run's index, then the views in order
    val_logits = predict_logits(loaded.model, loaded.normalizer, x_id, np.arange(len(x_id)))
    view_logits = predict_logits(loaded.model, loaded.normalizer, views, np.arange(len(views)))
    want = Ladder(sink=False).fit(np.concatenate([val_logits, view_logits]), target_accept=0.95)
    assert lad.thresholds() == pytest.approx(want.thresholds())
    assert fit_run_ladder(run, ood_index=ood_only.root, save=False, style_views=2).thresholds() == lad.thresholds()
    assert style_views_of(load_images(idx), rows, 2, seed=1).tobytes() != views.tobytes()  # the seed draws them
    rep = style_proxy_report(run, split="val", ood_index=ood_only.root, names=["erode-2", "dilate-1"],
                             signal="maxlogit", style_views=2)  # fmt: skip
    assert rep["ladder"]["style_views"] == 2 and report_key(rep) == "val/maxlogit/dataset/best/style2"
    assert "2 style views" in rep["ladder"]["source"]
    acc = rep["summary"]["id_accepted"]
    assert acc["held_out_mean"] == rep["rows"]["erode-2"]["id_accepted"]  # erode-2 alone is of a held-out kind
    with pytest.raises(StillroomError, match="style_views needs a ladder signal"):
        style_proxy_report(run, split="val", ood_index=ood_only.root, style_views=2)  # the saved ladder is as it is
    with pytest.raises(StillroomError, match="style_views must be >= 0"):
        fit_run_ladder(run, ood_index=ood_only.root, save=False, style_views=-1)
    copy = link_run(run, tmp_path / "saved")
    fit_run_ladder(copy, ood_index=ood_only.root, style_views=1)
    saved = json.loads((copy / "ladder.json").read_text())
    assert saved["fit_data"]["calibration"]["style_views"] == 1
