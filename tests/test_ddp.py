"""Distributed training (issue 7): 2 CPU processes with gloo follow a single process with the same global batch.

Why a tolerance at all: DDP averages the two ranks' gradients of their 16-sample mean losses, which is the gradient
of the 32-sample mean loss, but float32 sums run in another order (two halves, then an all-reduce). Those rounding
differences are ~1e-7 relative per step; plain SGD (no Adam normalisation that could amplify near-zero gradients)
over 4 steps keeps the weights within 1e-5. The model has LayerNorm only: per-rank BatchNorm statistics would differ
from global-batch ones by design (no SyncBatchNorm on CPU).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.utils.data import RandomSampler

from stillroom._io import StillroomError
from stillroom.config import config_from_dict
from stillroom.pipeline import train
from stillroom.train.trainer import GlobalBatchSampler


def test_global_batch_sampler_with_one_process_is_the_random_sampler_order():
    n, b, seed = 50, 8, 123
    ref = list(RandomSampler(range(n), generator=torch.Generator().manual_seed(seed)))[: (n // b) * b]
    assert list(GlobalBatchSampler(n, b, seed)) == ref


def test_global_batch_sampler_shards_each_global_batch():
    n, b, seed, world = 50, 8, 7, 4
    full = list(GlobalBatchSampler(n, b, seed))
    shards = [list(GlobalBatchSampler(n, b, seed, rank=r, world_size=world)) for r in range(world)]
    local = b // world
    for step in range(n // b):
        got = [i for s in shards for i in s[step * local : (step + 1) * local]]
        assert got == full[step * b : (step + 1) * b]
    with pytest.raises(StillroomError, match="divisible"):
        GlobalBatchSampler(n, 6, seed, rank=0, world_size=4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_train(raw: dict, out) -> None:
    """``stillroom train`` of the config ``raw`` in 2 gloo processes (torchrun), into ``out``."""
    cfg_path = out.parent / f"{out.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"]
    cmd = [
        *run,
        f"--master_port={_free_port()}",
        "-m",
        "stillroom",
        "train",
        str(cfg_path),
        "--out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_gloo_processes_match_one_process(shapes_index, tmp_path, tiny_config):
    raw = tiny_config(
        shapes_index.root,
        "ddp",
        model="timm:convnext_atto",  # LayerNorm only (see module docstring)
        epochs=1,
        optim={"name": "sgd", "lr": 0.05, "momentum": 0.9},
        precise_bn={"enabled": False},
    )
    _torchrun_train(raw, tmp_path / "two")
    single = train(config_from_dict(raw), tmp_path / "one")

    wa, wb = load_file(single / "final.safetensors"), load_file(tmp_path / "two" / "final.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=0, msg=k)
    ha, hb = (json.loads((d / "state.json").read_text())["history"] for d in (single, tmp_path / "two"))
    assert len(ha) == len(hb) == 1
    assert ha[0]["train_top1"] == hb[0]["train_top1"]  # correct/seen summed over ranks
    assert hb[0]["loss_ce"] == pytest.approx(ha[0]["loss_ce"], rel=1e-5)
    assert hb[0]["val_top1"] == ha[0]["val_top1"]
    # rank 0 alone wrote the run: one log line per epoch, metrics present
    assert len((tmp_path / "two" / "log.jsonl").read_text().splitlines()) == 1
    assert (tmp_path / "two" / "metrics.json").is_file()


def test_two_processes_train_a_loss_with_weights_on_batches_of_classmates(shapes_index, tmp_path, tiny_config):
    """supcon's projection head is no DDP parameter: its gradients are all-reduced by the loop, and every rank joins
    every all-reduce (a rank whose batch has no classmate pair has none). Batches of classmates shard by whole runs."""
    raw = tiny_config(shapes_index.root, "ddp_head", epochs=1, batch_size=16, precise_bn={"enabled": False})
    raw["loss"] = {"name": "supcon", "params": {"base": "ce", "projection": 8}}
    raw["data"]["per_class"] = 2
    _torchrun_train(raw, tmp_path / "two")
    state = load_file(tmp_path / "two" / "last.safetensors")
    assert state["loss.head.2.weight"].shape[0] == 8
    log = json.loads((tmp_path / "two" / "log.jsonl").read_text().splitlines()[0])
    assert log["loss_supcon"] > 0
