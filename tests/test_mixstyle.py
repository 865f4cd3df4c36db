"""MixStyle (models/mixstyle.py): what it mixes, when it is off, and a run trained with it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from stillroom._io import StillroomError
from stillroom.config import config_from_dict
from stillroom.models.factory import create_model
from stillroom.models.mixstyle import MixStyle, attach_mixstyle
from stillroom.train.precise_bn import recompute_bn_stats


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dim=(2, 3)), x.var(dim=(2, 3)).sqrt()


def test_mixstyle_mixes_statistics_and_keeps_the_normalized_content():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1) + torch.tensor([-2.0, 5.0]).view(2, 1, 1, 1)
    layer = torch.nn.Identity().train()
    hook = MixStyle(p=1.0, alpha=0.5)
    swapped = 0
    for _ in range(20):
        out = hook(layer, (x,), x)
        mu, sig = _stats(x)
        mu_o, sig_o = _stats(out)
        # each image's statistics are a convex mixture of the two images' (B = 2: itself and the other)
        lo, hi = mu.min(0).values, mu.max(0).values
        assert torch.all(mu_o >= lo - 1e-4) and torch.all(mu_o <= hi + 1e-4)
        assert torch.all(sig_o >= sig.min(0).values - 1e-3) and torch.all(sig_o <= sig.max(0).values + 1e-3)
        # ... and what is left after removing them is the image's own normalized content
        norm = (x - mu[..., None, None]) / sig[..., None, None]
        norm_o = (out - mu_o[..., None, None]) / sig_o[..., None, None]
        assert torch.allclose(norm, norm_o, atol=1e-3)
        swapped += int(not torch.allclose(mu_o, mu, atol=1e-3))
    assert swapped > 0  # the statistics did move in some draws


def test_mixstyle_is_off_in_eval_at_p0_and_keeps_the_plain_weights():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 32, 32)
    plain = create_model("resnet18", 1, 5, 32)
    hooked = create_model("resnet18", 1, 5, 32)
    hooked.load_state_dict(plain.state_dict())
    handles = attach_mixstyle(hooked, ["layer1", "layer2"], p=1.0)
    assert len(handles) == 2
    assert list(hooked.state_dict()) == list(plain.state_dict())  # hooks, not modules: same names, same weights
    plain.eval(), hooked.eval()
    assert torch.equal(hooked(x), plain(x))
    torch.manual_seed(1)
    plain.train(), hooked.train()
    assert not torch.allclose(hooked(x), plain(x))  # p = 1 in training: mixed
    off = create_model("resnet18", 1, 5, 32)
    off.load_state_dict(plain.state_dict())
    attach_mixstyle(off, ["layer1"], p=0.0)
    off.train()
    assert torch.equal(off(x), plain(x))


def test_precise_bn_re_estimation_never_mixes():
    torch.manual_seed(0)
    batches = [torch.randn(8, 1, 32, 32) for _ in range(3)]
    plain = create_model("resnet18", 1, 5, 32)
    hooked = create_model("resnet18", 1, 5, 32)
    hooked.load_state_dict(plain.state_dict())
    attach_mixstyle(hooked, ["layer1", "layer2"], p=1.0)
    recompute_bn_stats(plain, batches)
    recompute_bn_stats(hooked, batches)
    a, b = plain.state_dict(), hooked.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if "running" in k)


def test_mixstyle_names_a_missing_layer_and_checks_its_parameters():
    net = create_model("mobilenet_v3_small", 1, 5, 32)
    with pytest.raises(StillroomError, match=r"'layer1' is not a submodule of MobileNetV3 \(top-level: features"):
        attach_mixstyle(net, ["layer1"])
    attach_mixstyle(net, ["features.1", "features.3"])  # MobileNet stages by their dotted names
    with pytest.raises(StillroomError, match="p must be in"):
        MixStyle(p=1.5)
    with pytest.raises(StillroomError, match="at least one layer"):
        attach_mixstyle(net, [])


def test_run_with_mixstyle_trains_resumes_exactly_and_loads_as_the_plain_model(
    shapes_index, tmp_path, tiny_config, cut_after
):
    from stillroom.pipeline import train

    raw = tiny_config(shapes_index.root, "ms", epochs=3)  # timm's resnet10t: layer1, layer2
    plain = train(config_from_dict(raw), tmp_path / "plain")
    raw["model"]["mixstyle"] = {"p": 0.5}
    full = train(config_from_dict(raw), tmp_path / "full")
    w, wp = load_file(full / "final.safetensors"), load_file(plain / "final.safetensors")
    assert set(w) == set(wp) and not all(torch.equal(w[k], wp[k]) for k in w)  # same names; the hooks did act
    net = create_model(raw["model"]["name"], 1, shapes_index.num_classes, 32)
    net.load_state_dict(w)  # nothing of MixStyle in the weights
    cfg = json.loads((full / "config.json").read_text())
    assert cfg["model"]["mixstyle"] == {"p": 0.5, "alpha": 0.1, "layers": ["layer1", "layer2"]}
    cut_after(raw, tmp_path / "cut", 2)
    resumed = train(config_from_dict(raw), tmp_path / "cut", resume=True)
    wr = load_file(resumed / "final.safetensors")
    assert all(torch.equal(w[k], wr[k]) for k in w)  # the hooks' draws come from the restored RNG state
