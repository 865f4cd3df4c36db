"""The ladder's signal at run level (issue 16 item 4): ``fit_run_ladder`` and ``stillroom export --ladder-signal``
pass it through, the reports name it, and the service thresholds the chosen score and says so.

Uses the session's exported ``teacher_run`` (tests/_deploy.py) in linked copies; the OOD rows are ``ood_only``
(drawn rings and bars).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from _deploy import exported_run, link_run  # noqa: E402
from stillroom._io import StillroomError  # noqa: E402
from stillroom.deploy.ladder import SIGNALS, Ladder  # noqa: E402


@pytest.fixture(scope="module")
def run(teacher_run, tmp_path_factory):
    return exported_run(teacher_run, tmp_path_factory.mktemp("deploy"))


def test_fit_run_ladder_auto_chooses_on_the_ood_val_rows(run, tmp_path, ood_only):
    from stillroom.deploy.run_ladder import fit_run_ladder, run_ladder_report

    copy = link_run(run, tmp_path / "auto")
    lad = fit_run_ladder(copy, ood_index=ood_only.root, signal="auto")
    sel = lad.fit_summary_["signal"]
    # the copy has no export/ (no model_features.onnx): knn is not weighed, and says why (test_ladder_knn.py)
    assert sel["requested"] == "auto" and set(sel["val_auroc"]) == set(SIGNALS)
    assert not sel["knn_candidate"]["weighed"] and "stillroom export" in sel["knn_candidate"]["reason"]
    assert lad.signal_ == max(SIGNALS, key=lambda n: sel["val_auroc"][n])
    assert sel["n_ood"] == len(ood_only.split_indices("val"))
    back = Ladder.load(copy / "ladder.json")
    assert back.signal_ == lad.signal_ and back.fit_summary_["signal"] == sel
    rep = run_ladder_report(copy, split="val", ood_index=ood_only.root)
    assert rep["signal"] == rep["thresholds"]["signal"] == lad.signal_
    assert rep["id"]["coverage"] == pytest.approx(lad.fit_summary_["id"]["accept"])
    # Without OOD rows auto keeps maxlogit and says why; a fixed signal is kept as asked; the default is maxlogit.
    assert fit_run_ladder(copy, save=False, signal="auto").fit_summary_["signal"]["chosen"] == "maxlogit"
    assert fit_run_ladder(copy, save=False, ood_index=ood_only.root).fit_summary_["signal"]["requested"] == "maxlogit"
    assert fit_run_ladder(copy, save=False, signal="msp").signal_ == "msp"


def test_cli_export_ladder_signal(run, tmp_path, ood_only):
    import typer

    from stillroom.cli.deploy import register

    app = typer.Typer()
    register(app)
    copy = link_run(run, tmp_path / "cli", extra=("export",))
    args = ["export", str(copy), "--no-onnx", "--ood-index", str(ood_only.root)]
    res = CliRunner().invoke(app, [*args, "--ladder-signal", "energy"])
    assert res.exit_code == 0, res.output
    d = json.loads((copy / "ladder.json").read_text())
    assert d["signal"] == "energy" and d["format"] == "stillroom-ladder/2"
    assert "ladder signal energy: set by the caller" in res.output
    res = CliRunner().invoke(app, [*args, "--ladder-signal", "odin"])
    assert isinstance(res.exception, StillroomError) and "maxlogit, energy, msp, sink, knn, rmd, fused, auto" in str(
        res.exception
    )
    res = CliRunner().invoke(app, args)  # default auto
    assert res.exit_code == 0, res.output
    assert "highest validation AUROC" in res.output
    assert json.loads((copy / "ladder.json").read_text())["fit_summary"]["signal"]["requested"] == "auto"


def test_service_thresholds_the_ladder_signal(run, tmp_path):
    from stillroom.data.index import load_index
    from stillroom.deploy.ladder import describe
    from stillroom.deploy.run_ladder import fit_run_ladder
    from stillroom.deploy.service import Predictor

    copy = link_run(run, tmp_path / "svc", extra=("export",))
    lad = fit_run_ladder(copy, signal="energy")
    p = Predictor(copy, threads=1)
    idx = load_index(json.loads((copy / "model.json").read_text())["index"])
    for row_id in idx.split_indices("val")[:6]:
        body, row = p.predict((idx.root / idx.paths[row_id]).read_bytes(), "image/png", "x.png")
        assert body["thresholds"]["signal"] == "energy" and body["thresholds"]["t1"] == lad.t1_
        z = np.asarray(row["scores_json"]["logits"], dtype=np.float64)
        assert body["scores"]["ladder_score"] == pytest.approx(logsumexp(z), abs=1e-9)
        assert body["scores"]["max_logit"] == pytest.approx(z.max(), abs=1e-9)
        if body["reason"] != "no-structure":  # the structure gate overrides the logits (tested elsewhere)
            assert (body["verdict"], body["reason"]) == lad.decide(z[None])[0]
            assert body["reason_text"] == describe(body["reason"], 1, "energy")
