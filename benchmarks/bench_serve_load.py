"""Load test of ``stillroom serve`` on 127.0.0.1: bounded, mixed predict + feedback, checked against SQLite.

    python benchmarks/bench_serve_load.py                      # trains + exports a tiny run first (~1 min)
    python benchmarks/bench_serve_load.py --run runs/student   # an exported run (stillroom export RUN --onnx)
    python benchmarks/bench_serve_load.py --write BENCHMARKS.md

Starts ``python -m stillroom serve RUN --host 127.0.0.1 --port FREE --db TMP`` in a subprocess, waits for
``/health``, then sends exactly ``--requests`` requests from ``--concurrency`` concurrent clients (asyncio +
httpx, one connection each): every third request is feedback on an id returned by an earlier prediction (when one
is pending), the rest are PNG uploads to ``/predict``. It then stops the server and checks, with the server gone,
that every feedback the server accepted is in the SQLite file with the same prediction id, action, label and
comment (and no other feedback rows), and that every accepted prediction has its row. Prints throughput and
p50/p95 latency per endpoint; exits 1 on any 5xx, transport error, unexpected status or missing/changed row.

``--write FILE`` replaces the section between ``<!-- bench-serve-load:begin -->`` and ``<!-- bench-serve-load:end
-->`` (appended when absent) with the result, the command that produced it, the date and the 1-min load average
before and after (the machine may be shared: compare runs only at similar load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np

BEGIN, END = "<!-- bench-serve-load:begin -->", "<!-- bench-serve-load:end -->"
HOST = "127.0.0.1"  # loopback only: this load test never exposes anything to the network


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def tiny_run(root: Path) -> Path:
    """Train and export a tiny silhouette classifier (4 drawn shapes at 32 px) under ``root``."""
    from stillroom.config import config_from_dict
    from stillroom.data.synthetic import build_shapes
    from stillroom.deploy.onnx_export import export_onnx
    from stillroom.deploy.run_ladder import fit_run_ladder
    from stillroom.pipeline import train

    index = build_shapes(root / "shapes", n_per_class=40, size=32, num_classes=4, seed=0)
    cfg = {
        "name": "load",
        "data": {"index": str(index.root)},
        "model": {"name": "timm:resnet10t"},
        "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
        "augment": "none",
        "schedule": {"epochs": 2, "warmup_epochs": 0.5},
        "batch_size": 32,
        "seed": 0,
        "precise_bn": {"max_images": 64},
    }
    run = train(config_from_dict(cfg), root / "run")
    export_onnx(run)
    fit_run_ladder(run)
    return run


def sample_images(run: Path, n: int = 16) -> list[bytes]:
    """PNG bytes of up to ``n`` validation images of the run's dataset (what real clients would send)."""
    from stillroom.data.index import load_index

    index = load_index(json.loads((run / "model.json").read_text())["index"])
    rows = index.split_indices("val")[:n]
    return [(index.root / index.paths[int(r)]).read_bytes() for r in rows]


class Server:
    """``stillroom serve`` in a subprocess on 127.0.0.1; output goes to a log file (a full pipe would block it)."""

    def __init__(self, run: Path, db: Path, log: Path, threads: int | None) -> None:
        self.port, self.log_path = free_port(), log
        cmd = [sys.executable, "-m", "stillroom", "serve", str(run), "--host", HOST, "--port", str(self.port)]
        cmd += ["--db", str(db), *(["--threads", str(threads)] if threads else [])]
        self._log = open(log, "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        self.url = f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> int:
        # SIGINT: uvicorn's graceful shutdown (in-flight requests finish, the lifespan closes the database).
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def log_tail(self, n: int = 30) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


async def drive(url: str, images: list[bytes], classes: list[str], n: int, concurrency: int, seed: int) -> dict:
    """Send exactly ``n`` requests from ``concurrency`` workers; return per-request records and accepted rows."""
    rng = random.Random(seed)
    plan = ["feedback" if i % 3 == 2 else "predict" for i in range(n)]  # fixed mix, ~1/3 feedback
    state: dict[str, Any] = {"next": 0, "pending": [], "records": [], "predictions": {}, "feedback": []}

    async def one(client: httpx.AsyncClient, i: int) -> None:
        kind = plan[i]
        if kind == "feedback" and not state["pending"]:
            kind = "predict"  # nothing to give feedback on yet (start of the run)
        t0 = time.perf_counter()
        status, error, body = 0, None, None
        try:
            if kind == "predict":
                data = images[i % len(images)]
                r = await client.post("/predict", files={"file": (f"img{i}.png", data, "image/png")})
            else:
                pid = state["pending"].pop(rng.randrange(len(state["pending"])))
                action = rng.choice(("confirm", "correct", "not_species"))
                fb = {"action": action, "comment": f"load-test {i}"}
                if action == "correct":
                    fb["label"] = rng.choice(classes)
                r = await client.post(f"/feedback/{pid}", json=fb)
            status = r.status_code
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
        except httpx.HTTPError as err:
            error = f"{type(err).__name__}: {err}"
        ms = (time.perf_counter() - t0) * 1e3
        state["records"].append({"kind": kind, "status": status, "ms": ms, "error": error})
        if status == 200 and kind == "predict":
            state["predictions"][body["id"]] = body
            state["pending"].append(body["id"])
        elif status == 200 and kind == "feedback":
            expected_label = {"correct": fb.get("label"), "confirm": state["predictions"][pid]["prediction"]["label"]}
            state["feedback"].append(
                {
                    "feedback_id": body["feedback_id"],
                    "prediction_id": pid,
                    "action": fb["action"],
                    "label": expected_label.get(fb["action"]),
                    "comment": fb["comment"],
                }
            )

    async def worker(client: httpx.AsyncClient) -> None:
        while state["next"] < n:
            i = state["next"]
            state["next"] += 1
            await one(client, i)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        state["wall_s"] = time.perf_counter() - t0
    return state


def check_database(db: Path, state: dict) -> list[str]:
    """Problems found comparing what the server accepted with what SQLite holds (empty: all there)."""
    problems = []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = {
            r[0]: r[1:]
            for r in con.execute("SELECT id, prediction_id, action, label, comment FROM feedback ORDER BY id")
        }
        pred_ids = {r[0] for r in con.execute("SELECT id FROM predictions")}
    finally:
        con.close()
    accepted = state["feedback"]
    if len(rows) != len(accepted):
        problems.append(f"feedback: {len(accepted)} accepted but {len(rows)} rows in SQLite")
    for fb in accepted:
        want = (fb["prediction_id"], fb["action"], fb["label"], fb["comment"])
        got = rows.get(fb["feedback_id"])
        if got != want:
            problems.append(f"feedback {fb['feedback_id']}: SQLite has {got}, the server accepted {want}")
    missing = set(state["predictions"]) - pred_ids
    if missing:
        problems.append(f"predictions: {len(missing)} accepted ids missing from SQLite, e.g. {sorted(missing)[:3]}")
    return problems


def summarize(state: dict) -> dict[str, Any]:
    recs = state["records"]
    out: dict[str, Any] = {
        "requests": len(recs),
        "wall_s": round(state["wall_s"], 3),
        "throughput_req_s": round(len(recs) / state["wall_s"], 1),
        "server_errors_5xx": sum(r["status"] >= 500 for r in recs),
        "transport_errors": sum(r["error"] is not None for r in recs),
        "other_non_200": sum(0 < r["status"] < 500 and r["status"] != 200 for r in recs),
        "feedback_accepted": len(state["feedback"]),
        "predictions_accepted": len(state["predictions"]),
        "endpoints": {},
    }
    for kind in ("predict", "feedback"):
        ms = np.array([r["ms"] for r in recs if r["kind"] == kind])
        if ms.size:
            out["endpoints"][kind] = {
                "n": int(ms.size),
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p95_ms": round(float(np.percentile(ms, 95)), 2),
                "max_ms": round(float(ms.max()), 2),
            }
    errors = [r["error"] for r in recs if r["error"]]
    out["first_errors"] = errors[:5]
    return out


def render(result: dict[str, Any], command: str) -> str:
    lines = [
        BEGIN,
        "## Serving load (`benchmarks/bench_serve_load.py`)",
        "",
        f"`{command}`",
        "",
        f"{result['date']}, {result['machine']}, client and server at nice {result['niceness']}; 1-min load average "
        f"{result['load_before']} before, {result['load_after']} after (the machine may be shared with other jobs: "
        "compare only runs at similar load).",
        f"{result['requests']} requests from {result['concurrency']} concurrent clients on {HOST} "
        f"({result['endpoints'].get('predict', {}).get('n', 0)} predict as PNG uploads, "
        f"{result['endpoints'].get('feedback', {}).get('n', 0)} feedback), model {result['model']}.",
        "",
        "| endpoint | requests | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for kind, e in result["endpoints"].items():
        lines.append(f"| {kind} | {e['n']} | {e['p50_ms']:.1f} | {e['p95_ms']:.1f} | {e['max_ms']:.1f} |")
    lines += [
        "",
        f"Throughput {result['throughput_req_s']:.1f} requests/s ({result['wall_s']:.1f} s wall). "
        f"5xx: {result['server_errors_5xx']}, transport errors: {result['transport_errors']}, other non-200: "
        f"{result['other_non_200']}. SQLite check: {result['feedback_accepted']} accepted feedback rows, "
        + ("all present with the same content." if not result["db_problems"] else "; ".join(result["db_problems"])),
        END,
    ]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, result: dict[str, Any], command: str) -> Path:
    from stillroom._io import replace_marked_section

    entry = render(result, command)
    return replace_marked_section(path, BEGIN, END, entry.rstrip("\n"), entry)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="exported run directory (default: train and export a tiny one)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads of the server")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", type=Path, help="replace the load section of this Markdown file (BENCHMARKS.md)")
    p.add_argument("--json", type=Path, help="also write the raw result here")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        p.error("--requests and --concurrency must be >= 1")
    with tempfile.TemporaryDirectory(prefix="stillroom-load-") as tmp_s:
        tmp = Path(tmp_s)
        run = args.run if args.run is not None else tiny_run(tmp)
        meta = json.loads((run / "model.json").read_text())
        classes, arch = meta["classes"], meta["arch"]
        images = sample_images(run)
        db = tmp / "telemetry.sqlite"
        load_before = round(os.getloadavg()[0], 2)
        server = Server(run, db, tmp / "server.log", args.threads)
        try:
            server.wait_ready()
            state = asyncio.run(drive(server.url, images, classes, args.requests, args.concurrency, args.seed))
        finally:
            rc = server.stop()
        load_after = round(os.getloadavg()[0], 2)
        result = summarize(state)
        result["db_problems"] = check_database(db, state)
        log_tail = server.log_tail(10)
    result.update(
        concurrency=args.concurrency,
        load_before=load_before,
        load_after=load_after,
        server_exit=rc,
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{os.cpu_count()} CPUs",
        niceness=os.nice(0),  # the server inherits it; a niced run on a busy machine gets less CPU
        model=f"{arch} (ONNX fp32)",
    )
    for kind, e in result["endpoints"].items():
        print(f"{kind:8s} n={e['n']:5d}  p50 {e['p50_ms']:.1f} ms  p95 {e['p95_ms']:.1f} ms  max {e['max_ms']:.1f} ms")
    print(
        f"{result['requests']} requests in {result['wall_s']:.1f} s = {result['throughput_req_s']:.1f} req/s; "
        f"5xx {result['server_errors_5xx']}, transport errors {result['transport_errors']}, "
        f"other non-200 {result['other_non_200']}; load average {load_before} -> {load_after}"
    )
    for prob in result["db_problems"]:
        print(f"SQLite: {prob}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.write:
        command = " ".join(["python benchmarks/bench_serve_load.py", *(shlex.quote(a) for a in argv)])
        print(f"updated {write_markdown(args.write, result, command)}")
    failed = (
        result["server_errors_5xx"] or result["transport_errors"] or result["other_non_200"] or result["db_problems"]
    )
    if failed:
        print("FAILED" + "".join(f"\n  {e}" for e in result["first_errors"]) + f"\nserver log tail:\n{log_tail}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
