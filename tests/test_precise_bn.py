"""Precise BN moves running statistics to the clean-data statistics and leaves weights untouched."""

import torch
from torch import nn

from stillroom.train.precise_bn import recompute_bn_stats


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.01), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)
    )


def test_recompute_matches_clean_statistics_and_keeps_weights():
    model = _model()
    clean = [torch.rand(16, 1, 8, 8) for _ in range(4)]
    model(clean[0])  # materialise the lazy layer
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(20):  # "heavy augmentation": shifted, scaled inputs, few steps, low momentum
        x = torch.rand(16, 1, 8, 8) * 4 + 3
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}

    conv, bn = model[0], model[1]
    with torch.no_grad():
        feats = torch.cat([conv(x) for x in clean])  # (64, 4, 6, 6)
    clean_mean = feats.mean(dim=(0, 2, 3))
    before = (bn.running_mean - clean_mean).abs().max().item()

    seen = recompute_bn_stats(model, clean)
    after = (bn.running_mean - clean_mean).abs().max().item()
    assert seen == 64
    assert before > 0.1 and after < 1e-5, (before, after)
    # Variance: average of per-batch unbiased variances (equal batch sizes), compare to that exact value.
    per_batch = torch.stack([conv(x).detach().transpose(0, 1).reshape(4, -1).var(dim=1) for x in clean])
    assert torch.allclose(bn.running_var, per_batch.mean(0), atol=1e-5)
    assert bn.momentum == 0.01 and not model.training
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_no_batchnorm_is_a_noop():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    assert recompute_bn_stats(model, [torch.zeros(2, 1, 2, 2)]) == 0
