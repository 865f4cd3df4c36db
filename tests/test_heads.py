"""One head per teacher (models/heads.py): the bank's output is the heads' mean distribution, head m learns from
teacher m alone, and a run of such a student trains, records its architecture and loads again."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from stillroom._io import StillroomError
from stillroom.config import config_from_dict
from stillroom.evaluate.runner import evaluate_run
from stillroom.models.factory import create_model
from stillroom.models.heads import HeadBank, head_bank, heads_arch, split_heads_arch
from stillroom.pipeline import train
from stillroom.softlabels.export import export_softlabels
from stillroom.train.trainer import _forward_loss


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "resnet18", "efficientnet_lite0"])
def test_bank_answers_with_the_mean_distribution_of_its_heads(arch):
    torch.manual_seed(0)
    net = create_model(f"{arch}+heads3", 1, 5, 32)
    bank = head_bank(net)
    assert isinstance(bank, HeadBank) and bank.num_heads == 3
    assert sum(isinstance(m, HeadBank) for m in net.modules()) == 1
    x = torch.randn(4, 1, 32, 32)
    net.train()
    out = net(x)
    heads = bank.last_heads()
    assert heads.shape == (3, 4, 5)
    expected = heads.softmax(-1).mean(0).log()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(heads[0], heads[1])  # independently initialised heads
    # evaluation: the same function, one (B, K) output of log-probabilities, nothing stashed from it
    net.eval()
    with torch.no_grad():
        e = net(x)
    assert e.shape == (4, 5)
    torch.testing.assert_close(e.exp().sum(1), torch.ones(4))
    assert head_bank(create_model(arch, 1, 5, 32)) is None


def test_whole_classifiers_as_heads():
    """``+classifiers<M>``: mobilenet_v3_small's 576 -> 1024 -> K classifier repeated, each copy re-initialised."""
    plain = create_model("mobilenet_v3_small", 1, 5, 32)
    lin = create_model("mobilenet_v3_small+heads3", 1, 5, 32)
    full = create_model("mobilenet_v3_small+classifiers3", 1, 5, 32)
    n = [sum(p.numel() for p in m.parameters()) for m in (plain, lin, full)]
    last, classifier = 1024 * 5 + 5, sum(p.numel() for p in plain.classifier.parameters())
    assert n[1] - n[0] == 2 * last and n[2] - n[0] == 2 * classifier
    bank = full.classifier
    assert isinstance(bank, HeadBank) and all(isinstance(h, nn.Sequential) for h in bank.heads)
    assert not torch.equal(bank.heads[0][0].weight, bank.heads[1][0].weight)
    assert isinstance(head_bank(create_model("resnet18+classifiers2", 1, 5, 32)), HeadBank)  # fc is its classifier


def test_copies_of_a_training_bank_start_empty():
    net = create_model("mobilenet_v3_small+heads2", 1, 4, 32).train()
    net(torch.randn(2, 1, 32, 32)).sum().backward()  # the stash now holds a tensor of the training graph
    twin = copy.deepcopy(net)  # evaluation copies and weight averaging deep-copy the network
    with pytest.raises(StillroomError, match="no training forward"):
        head_bank(twin).last_heads()
    key = "classifier.3.heads.1.weight"
    torch.testing.assert_close(twin.state_dict()[key], net.state_dict()[key])


def test_architecture_names_round_trip_and_bad_counts_are_refused():
    assert heads_arch("resnet18", 1) == "resnet18" and heads_arch("resnet18", 4) == "resnet18+heads4"
    assert heads_arch("resnet18", 2, "classifier") == "resnet18+classifiers2"
    assert split_heads_arch("resnet18+heads4") == ("resnet18", 4, "linear")
    assert split_heads_arch("timm:resnet10t+classifiers3") == ("timm:resnet10t", 3, "classifier")
    assert split_heads_arch("timm:resnet10t") == ("timm:resnet10t", 1, "linear")
    for bad in ("resnet18+heads1", "resnet18+classifiers0"):
        with pytest.raises(StillroomError, match="at least 2"):
            create_model(bad, 1, 4, 32)


class _Recorder(nn.Module):
    """A loss that records what it was given and returns the mean student logit as its only term."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def forward(self, student, teacher, y, **ctx):
        self.calls.append((student.detach().clone(), None if teacher is None else teacher.clone()))
        return {"loss_x": student.mean()}


def test_each_head_learns_from_its_own_teacher_only():
    torch.manual_seed(0)
    net = create_model("mobilenet_v3_small+heads3", 1, 4, 32).train()
    bank = head_bank(net)
    t = torch.stack([torch.full((6, 4), float(m)) for m in range(3)])  # teacher m: logits all equal to m
    y = torch.zeros(6, dtype=torch.long)
    batch = (torch.randn(6, 1, 32, 32), t, y, torch.arange(6), 1.0, y >= 0, 0)
    loss_fn = _Recorder()
    _, terms, total = _forward_loss(net, loss_fn, batch, torch.device("cpu"), False, None, bank)
    heads = bank.last_heads()
    assert len(loss_fn.calls) == 3
    for m, (student, teacher) in enumerate(loss_fn.calls):
        torch.testing.assert_close(student, heads[m].detach())
        assert teacher.shape == (1, 6, 4) and bool((teacher == m).all())
    torch.testing.assert_close(terms["loss_x"], heads.mean(), atol=1e-6, rtol=1e-6)  # mean over the heads
    total.backward()
    assert all(h.weight.grad is not None for h in bank.heads)


def test_a_student_of_one_head_per_teacher_trains_and_loads(teacher_run, shapes_index, tmp_path, tiny_config):
    stores = [str(export_softlabels(teacher_run, shapes_index.root, tmp_path / f"store{i}").path) for i in range(2)]
    loss = {"name": "kd", "params": {"kd_weight": 0.5, "temperature": 4.0}}
    raw = tiny_config(shapes_index.root, "hydra", epochs=6, loss=loss, teachers={"cached": stores})
    raw["model"]["heads"] = 2
    run = train(config_from_dict(raw), tmp_path / "hydra")
    assert json.loads((run / "model.json").read_text())["arch"] == "timm:resnet10t+heads2"
    # evaluation loads the weights through create_model's "+heads2" and reads the mean distribution
    out = evaluate_run(run, splits=("test",), weights=("best",), plots=False)
    assert out["splits"]["test"]["best"]["top1"] > 0.5  # clearly above chance (0.25)
    raw3 = {**raw, "name": "hydra3", "model": {**raw["model"], "heads": 3}}
    with pytest.raises(StillroomError, match="one teacher per head"):  # at load, before any store is opened
        config_from_dict(raw3)


def test_a_bank_exports_to_onnx_with_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    import numpy as np

    from stillroom.deploy._ort import ort_logits, ort_session
    from stillroom.deploy.onnx_export import export_model_onnx

    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small+heads3", 1, 5, 32).eval()
    path = tmp_path / "h.onnx"
    export_model_onnx(model, path, (1, 32, 32), dynamic=True)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    got = ort_logits(ort_session(path, threads=1), x.numpy(), batch_size=3)
    assert np.abs(ref - got).max() < 1e-4
