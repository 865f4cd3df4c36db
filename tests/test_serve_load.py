"""The serving load test at a small size: a real ``stillroom serve`` subprocess on 127.0.0.1, mixed predict and
feedback from concurrent clients, 0 server errors, every accepted feedback row in SQLite (benchmarks/)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _deploy import exported_run  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_serve_load.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_serve_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_load_small_has_no_errors_and_every_feedback_is_stored(bench, teacher_run, tmp_path_factory, tmp_path):
    run = exported_run(teacher_run, tmp_path_factory.mktemp("deploy"))
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Latency\n\nkept as it is\n")
    args = ["--run", str(run), "--requests", "200", "--concurrency", "16", "--json", str(tmp_path / "r.json")]
    assert bench.main([*args, "--write", str(md)]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["requests"] == 200 and res["server_errors_5xx"] == 0 and res["transport_errors"] == 0
    assert res["other_non_200"] == 0 and res["db_problems"] == [] and res["server_exit"] == 0
    ends = res["endpoints"]
    assert ends["predict"]["n"] + ends["feedback"]["n"] == 200 and ends["feedback"]["n"] >= 50
    assert res["feedback_accepted"] == ends["feedback"]["n"]
    text = md.read_text()
    assert "kept as it is" in text and text.count(bench.BEGIN) == 1
    assert "python benchmarks/bench_serve_load.py --run" in text and "load average" in text


def test_markdown_section_is_replaced_not_duplicated(bench, tmp_path):
    md = tmp_path / "B.md"
    md.write_text(f"# B\n\nbefore\n\n{bench.BEGIN}\nold\n{bench.END}\n\nafter\n")
    result = {
        "date": "d", "machine": "m", "niceness": 0, "load_before": 1.0, "load_after": 2.0, "requests": 3,
        "concurrency": 2, "model": "x", "throughput_req_s": 1.0, "wall_s": 3.0, "server_errors_5xx": 0,
        "transport_errors": 0, "other_non_200": 0, "feedback_accepted": 1, "db_problems": [],
        "endpoints": {"predict": {"n": 2, "p50_ms": 1, "p95_ms": 2, "max_ms": 3}},
    }  # fmt: skip
    bench.write_markdown(md, result, "cmd")
    text = md.read_text()
    assert "old" not in text and text.count(bench.BEGIN) == 1 and "before" in text and "after" in text
    assert "`cmd`" in text and "| predict | 2 |" in text


def test_bench_binds_loopback_only(bench):
    assert bench.HOST == "127.0.0.1"
