"""The CLI: help lists the pipeline commands; expected errors exit 2 with a one-line message, no traceback."""

import json
import subprocess
import sys

import yaml


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "stillroom", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_help_lists_commands():
    out = _run("--help")
    assert out.returncode == 0
    for cmd in ("data", "train", "softlabels", "evaluate", "demo"):
        assert cmd in out.stdout
    sub = _run("data", "build", "sprites", "--help")
    assert "--tarball" in sub.stdout and "--split" in sub.stdout


def test_bad_config_is_a_clean_error(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\ndata: {index: nowhere}\nschedule: {epochs: -1}\n")
    out = _run("train", str(cfg))
    assert out.returncode == 2
    assert "schedule.epochs" in out.stderr and "Traceback" not in out.stderr


def test_train_export_check_evaluate_via_cli(shapes_index, tiny_config, tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(shapes_index.root, "cli_teacher", epochs=1)))
    run = tmp_path / "run"
    assert _run("train", str(cfg), "--out", str(run), "--quiet").returncode == 0
    out = _run("softlabels", "export", "--teacher", str(run), "--index", str(shapes_index.root))
    assert out.returncode == 0, out.stderr
    check = _run("softlabels", "check", str(run), "--index", str(shapes_index.root), "--strict",
                 "--out", str(tmp_path / "a.json"))  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert json.loads((tmp_path / "a.json").read_text())["ok"] is True
    ev = _run("evaluate", str(run), "--split", "val", "--weights", "best")
    assert ev.returncode == 0, ev.stderr
    assert "val" in json.loads((run / "metrics.json").read_text())["splits"]
