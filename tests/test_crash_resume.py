"""Crash safety: SIGKILL a training run mid-epoch and a soft-label export mid-way, resume, and get bit-identical
results to uninterrupted runs (checkpoints carry optimizer + RNG + loop state; the export commits progress
atomically after the data it declares valid).

Every run happens in a subprocess with the same environment (one intra-op thread), so the interrupted and the
uninterrupted processes compute with the same kernels and can be compared with ``torch.equal`` / byte equality.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from stillroom._io import StillroomError
from stillroom.data.synthetic import build_shapes
from stillroom.softlabels.export import partial_dir
from stillroom.softlabels.store import SoftLabelStore

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
_TIMEOUT = 120.0
# Volatile fields: wall times and the creation date differ between any two runs, interrupted or not.
_TIMES = {"train_seconds", "epoch_seconds", "build_seconds", "created", "seconds"}


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=_TIMEOUT)
    assert proc.returncode == 0, out


def _wait_for(cond, proc: subprocess.Popen, what: str, poll: float = 0.005) -> None:
    deadline = time.monotonic() + _TIMEOUT
    while not cond():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}:\n{out}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


class _Killer(threading.Thread):
    """SIGKILLs ``proc`` ``delay()`` seconds after ``ready()`` first holds, while the test does other work."""

    def __init__(self, proc: subprocess.Popen, ready, delay=lambda: 0.0) -> None:
        super().__init__(daemon=True)
        self.proc, self.ready, self.delay, self.error = proc, ready, delay, None
        self.start()

    def run(self) -> None:
        try:
            _wait_for(self.ready, self.proc, "the kill point")
            time.sleep(self.delay())
            _kill(self.proc)
        except BaseException as err:  # reported in join(): pytest.fail in a thread would be lost
            self.proc.kill()
            self.error = err

    def join(self, timeout: float | None = _TIMEOUT) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def _one_thread():
    # The subprocesses run with OMP_NUM_THREADS=1; in-process runs must use the same kernels to compare bitwise.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _drop_times(obj):
    if isinstance(obj, dict):
        return {k: _drop_times(v) for k, v in obj.items() if k not in _TIMES}
    if isinstance(obj, list):
        return [_drop_times(v) for v in obj]
    return obj


def _epochs_done(run: Path) -> int:
    try:
        return int(json.loads((run / "state.json").read_text())["epoch"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def crash_data(tmp_path_factory) -> Path:
    # 4 classes x 40 at 32 px: 96 training images, batch 8 -> 12 steps per epoch.
    return build_shapes(tmp_path_factory.mktemp("crash_shapes"), n_per_class=40, size=32, num_classes=4, seed=1).root


@pytest.fixture(scope="module")
def trained(crash_data, tiny_config, tmp_path_factory) -> dict[str, Path]:
    """A run SIGKILLed in epoch 2 (subprocess) then resumed, and an uninterrupted run trained meanwhile."""
    from stillroom.config import config_from_dict
    from stillroom.pipeline import train

    root = tmp_path_factory.mktemp("crash")
    raw = tiny_config(crash_data, "crash", epochs=2, batch_size=8, precise_bn={"max_images": 32})
    config = root / "crash.yaml"
    config.write_text(yaml.safe_dump(raw))
    full, cut = root / "full", root / "cut"
    victim = _start(["-m", "stillroom", "train", str(config), "--quiet", "--out", str(cut)], root)

    def mid_epoch_2() -> float:
        # Half of epoch 1's training time after its checkpoint: the middle of epoch 2.
        return json.loads((cut / "log.jsonl").read_text().splitlines()[0])["train_seconds"] / 2

    killer = _Killer(victim, lambda: _epochs_done(cut) == 1 and (cut / "log.jsonl").is_file(), mid_epoch_2)
    with _one_thread():
        train(config_from_dict(raw), full)
        killer.join()
        assert _epochs_done(cut) == 1, "the kill came too late: epoch 2 had finished"
        assert not (cut / "metrics.json").exists()
        with pytest.raises(StillroomError, match="--resume"):
            train(config_from_dict(raw), cut)
        train(config_from_dict(raw), cut, resume=True)
    return {"full": full, "cut": cut, "index": crash_data}


def test_training_killed_mid_epoch_resumes_to_identical_weights(trained):
    full, cut = trained["full"], trained["cut"]
    for name in ("final.safetensors", "best.safetensors", "last.safetensors"):
        a, b = load_file(full / name), load_file(cut / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (full, cut))
    assert ma["splits"] == mb["splits"]
    sa, sb = (json.loads((r / "state.json").read_text()) for r in (full, cut))
    assert _drop_times(sa) == _drop_times(sb)


_EXPORT_ARGS = {"weights": "final", "batch_size": 2, "views": 3, "augment": "silhouette", "augment_seed": 5}
_EXPORT = (
    "import sys; import stillroom.softlabels.export as e; e.COMMIT_SECONDS = 0.02; "
    f"e.export_softlabels(sys.argv[1], sys.argv[2], sys.argv[3], **{_EXPORT_ARGS!r})"
)


def _committed(work: Path) -> int:
    try:
        return int(json.loads((work / "progress.json").read_text())["done"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def test_softlabel_export_killed_mid_way_resumes_to_identical_bytes(trained, tmp_path):
    from stillroom.softlabels.export import export_softlabels

    run, index = trained["full"], trained["index"]
    ref, out = tmp_path / "ref", tmp_path / "store"
    work = partial_dir(out)
    n_units = 3 * 160  # views x rows, 2 per batch
    victim = _start(["-c", _EXPORT, str(run), str(index), str(out)], tmp_path)
    killer = _Killer(victim, lambda: _committed(work) >= n_units // 4)
    with _one_thread():
        export_softlabels(run, index, ref, **_EXPORT_ARGS)
        killer.join()
        done = _committed(work)
        assert 0 < done < n_units, f"the kill came too late ({done} of {n_units} done)"
        # An interrupted export is never a store: nothing at the destination, the work dir does not open as one.
        assert not out.exists()
        for path in (out, work):
            with pytest.raises(StillroomError):
                SoftLabelStore.open(path)
        seen = []
        export_softlabels(run, index, out, progress=lambda phase, d, total: seen.append(d), **_EXPORT_ARGS)
    assert seen[0] > done, "the resumed export started over instead of continuing"
    assert not work.exists() and not partial_dir(ref).exists()
    for name in ("logits.npy", "paths.txt"):
        assert (ref / name).read_bytes() == (out / name).read_bytes(), f"{name} differs after resume"
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (ref, out))
    assert _drop_times(ma) == _drop_times(mb)
    assert SoftLabelStore.open(out).logits.shape == (3, 160, 4)
