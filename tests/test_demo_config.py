"""The demo's run configs carry its budget's training recipe (augmentation, batch size) to every model."""

from __future__ import annotations

from pathlib import Path

import pytest

from stillroom.config import config_from_dict
from stillroom.pipeline.demo import DEMO_BUDGET, QUICK_BUDGET, _config


@pytest.mark.parametrize("budget", [DEMO_BUDGET, QUICK_BUDGET])
def test_budget_recipe_reaches_every_config(budget):
    raw = _config("t", Path("data"), "resnet18", 3, 0, budget, eval_every=2)
    cfg = config_from_dict(raw)
    assert cfg.augment == budget["augment"] and cfg.batch_size == budget["batch_size"]
    assert cfg.eval_every == 2 and cfg.schedule.epochs == 3


def test_override_is_validated():
    raw = _config(
        "s", Path("data"), "mobilenet_v3_small", 3, 0, {**DEMO_BUDGET, "augment": "restyle", "batch_size": 64}
    )
    cfg = config_from_dict(raw)
    assert (cfg.augment, cfg.batch_size) == ("restyle", 64)
    with pytest.raises(Exception, match="augment"):
        config_from_dict(_config("s", Path("data"), "resnet18", 3, 0, {**DEMO_BUDGET, "augment": "sparkles"}))
