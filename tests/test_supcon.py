"""Supervised contrastive term (``distill.losses.supcon``) against pytorch-metric-learning, the feature tap it reads
(``models.features``), and a run trained with it."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from stillroom._io import StillroomError
from stillroom.config import config_from_dict
from stillroom.data.index import IGNORE_INDEX
from stillroom.distill.losses import build_loss
from stillroom.distill.losses.supcon import supervised_contrastive
from stillroom.evaluate.feature_ood import pool_features, split_model
from stillroom.models.factory import create_model
from stillroom.models.features import attach_feature_tap, feature_dim
from stillroom.train.checkpoint import load_training_state


def _feats(b: int = 16, d: int = 8, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randint(0, k, (b,), generator=g)


@pytest.mark.parametrize(("temperature", "seed"), [(0.1, 0), (0.5, 1), (1.0, 2)])
def test_matches_pytorch_metric_learning(temperature, seed):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.losses import SupConLoss

    f, y = _feats(seed=seed)
    ref = SupConLoss(temperature=temperature)(f, y)
    torch.testing.assert_close(supervised_contrastive(f, y, temperature), ref, rtol=1e-5, atol=1e-6)


def test_rows_without_a_class_and_without_classmates_are_left_out():
    f, y = _feats(b=12, k=3, seed=3)
    y_t = y.clone()
    y_t[[1, 5, 7]] = IGNORE_INDEX  # transfer rows: no class, no part in the term
    keep = y_t != IGNORE_INDEX
    torch.testing.assert_close(supervised_contrastive(f, y_t, 0.1), supervised_contrastive(f[keep], y[keep], 0.1))
    # a row whose class no other row holds is no anchor, but stays a negative of the others
    f2, y2 = torch.cat([f[keep], torch.randn(1, f.shape[1])]), torch.cat([y[keep], torch.tensor([9])])
    assert not torch.isclose(supervised_contrastive(f2, y2, 0.1), supervised_contrastive(f[keep], y[keep], 0.1))
    lone = torch.randn(5, 8, requires_grad=True)
    out = supervised_contrastive(lone, torch.arange(5), 0.1)  # nobody has a classmate: 0, still differentiable
    out.backward()
    assert out.item() == 0.0 and lone.grad is not None and not lone.grad.any()


def test_term_falls_as_classes_gather_and_wrapper_keeps_the_base_terms():
    g = torch.Generator().manual_seed(4)
    y = torch.arange(4).repeat_interleave(4)
    centres = torch.randn(4, 16, generator=g)
    tight = centres[y] + 0.05 * torch.randn(16, 16, generator=g)
    loose = centres[y] + 3.0 * torch.randn(16, 16, generator=g)
    assert supervised_contrastive(tight, y, 0.1) < supervised_contrastive(loose, y, 0.1)
    z, t = torch.randn(16, 4, generator=g), torch.randn(1, 16, 4, generator=g)
    out = build_loss("supcon", base="kd", weight=0.25, temperature=0.2)(z, t, y, features=loose, epoch=0)
    base = build_loss("kd")(z, t, y)
    assert set(out) == set(base) | {"loss_supcon"}
    assert all(torch.equal(out[k], base[k]) for k in base)
    torch.testing.assert_close(out["loss_supcon"], 0.25 * supervised_contrastive(loose, y, 0.2))


def test_missing_or_misshapen_features_are_an_error():
    z, y = torch.randn(6, 3), torch.randint(0, 3, (6,))
    loss = build_loss("supcon", base="ce")
    assert loss.needs_features and not loss.needs_teacher
    with pytest.raises(StillroomError, match=r"loss 'supcon': needs the student's pooled features \(6, D\), got None"):
        loss(z, None, y)
    with pytest.raises(StillroomError, match=r"got \(5, 4\)"):
        loss(z, None, y, features=torch.randn(5, 4))


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "resnet18", "timm:resnet10t"])
def test_tap_is_the_pooled_map_evaluation_reads_and_ignores_eval_passes(name):
    torch.manual_seed(0)
    net = create_model(name, 1, 5, 32)
    tap = attach_feature_tap(net)
    x = torch.randn(4, 1, 32, 32)
    net.train()
    net(x)
    backbone, _ = split_model(net)
    net.eval()
    want = pool_features(backbone(x))  # eval-mode BN: a different map, so the tap below must not have moved
    net.train()
    net(x)
    got = tap.pooled()
    net.eval()
    net(torch.randn(2, 1, 32, 32))
    assert tap.pooled().shape == got.shape == (4, want.shape[1]) == (4, feature_dim(net))
    assert torch.equal(tap.pooled(), got)  # an evaluation forward left the training batch's features in place
    copy.deepcopy(net)(x)  # an evaluation copy (its map is part of a graph) gets a tap of its own
    assert torch.equal(tap.pooled(), got)


def test_tap_names_a_model_without_a_feature_map():
    with pytest.raises(StillroomError, match="VisionTransformer: no last feature map known"):
        attach_feature_tap(create_model("vit_tiny", 1, 5, 32))
    with pytest.raises(StillroomError, match="no training forward has run"):
        attach_feature_tap(create_model("resnet18", 1, 5, 32)).pooled()


def test_run_with_supcon_trains_logs_its_term_and_loads_as_the_plain_model(shapes_index, tmp_path, tiny_config):
    from stillroom.pipeline import train

    raw = tiny_config(shapes_index.root, "sc", epochs=2)
    raw["loss"] = {"name": "supcon", "params": {"base": "ce", "weight": 1.0}}
    run = train(config_from_dict(raw), tmp_path / "sc")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["loss_supcon"] > 0 for r in log)  # shapes share classes in every batch
    assert log[-1]["loss_supcon"] < log[0]["loss_supcon"]
    net = create_model(raw["model"]["name"], 1, shapes_index.num_classes, 32)
    net.load_state_dict(load_file(run / "final.safetensors"))  # nothing of the tap in the weights
    params = json.loads((run / "model.json").read_text())["loss_params"]
    assert params["weight"] == 1.0 and params["temperature"] == 0.1 and params["base"] == "ce"


def test_projection_head_is_built_from_its_own_seed_and_reads_the_features():
    f, y = _feats(b=16, d=8, k=4, seed=5)
    z, t = torch.randn(16, 4), torch.randn(1, 16, 4)
    loss = build_loss("supcon", base="ce", projection=3)
    with pytest.raises(StillroomError, match="loss 'supcon': the projection head is not built"):
        loss(z, t, y, features=f)
    state = torch.get_rng_state()
    loss.bind_features(8, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the student's init and the run's stream are untouched
    twin = build_loss("supcon", base="ce", projection=3)
    twin.bind_features(8, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(loss.parameters(), twin.parameters(), strict=True))
    assert [tuple(p.shape) for p in loss.parameters()] == [(8, 8), (8,), (3, 8), (3,)]
    out = loss(z, t, y, features=f)["loss_supcon"]
    torch.testing.assert_close(out, 0.5 * supervised_contrastive(loss.head(f), y, 0.1))
    assert not torch.isclose(out, 0.5 * supervised_contrastive(f, y, 0.1))
    out.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
    plain = build_loss("supcon", base="ce")
    plain.bind_features(8, seed=7)  # projection 0: nothing built, nothing to train
    assert not list(plain.parameters())


def test_run_with_a_projection_head_trains_it_and_resumes_exactly(shapes_index, tmp_path, tiny_config, cut_after):
    from stillroom.pipeline import train

    raw = tiny_config(shapes_index.root, "sch", epochs=3)
    raw["loss"] = {"name": "supcon", "params": {"base": "ce", "weight": 1.0, "projection": 16}}
    full = train(config_from_dict(raw), tmp_path / "full")
    state = load_file(full / "last.safetensors")
    head = {k: v for k, v in state.items() if k.startswith("loss.")}
    assert sorted(head) == ["loss.head.0.bias", "loss.head.0.weight", "loss.head.2.bias", "loss.head.2.weight"]
    net = create_model(raw["model"]["name"], 1, shapes_index.num_classes, 32)
    width = feature_dim(net)
    assert head["loss.head.0.weight"].shape == (width, width) and head["loss.head.2.weight"].shape == (16, width)
    fresh = build_loss("supcon", base="ce", projection=16)
    fresh.bind_features(width, raw["seed"])
    assert not torch.equal(fresh.head[2].weight, head["loss.head.2.weight"])  # the head trained
    net.load_state_dict(load_file(full / "final.safetensors"))  # the served weights hold no head
    cut_after(raw, tmp_path / "cut", 2)
    resumed = train(config_from_dict(raw), tmp_path / "cut", resume=True)
    wa, wb = load_file(full / "final.safetensors"), load_file(resumed / "final.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the head and its momentum came back with the student
    other = build_loss("supcon", base="ce", projection=8)
    other.bind_features(width, 0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(StillroomError, match="last.safetensors: the loss's weights do not match this run's loss"):
        load_training_state(resumed / "last.safetensors", net, opt, loss=other)
