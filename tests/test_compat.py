"""The torchvision shim: importing stillroom makes torchvision/timm importable and models/transforms usable."""

import subprocess
import sys


def test_torchvision_and_timm_import_after_stillroom():
    code = (
        "import stillroom, torch, torchvision, timm\n"
        "import torchvision.transforms.v2.functional as F\n"
        "m = torchvision.models.resnet18(num_classes=3).eval()\n"
        "x = F.horizontal_flip(torch.zeros(1, 3, 8, 8))\n"
        "print(m(torch.zeros(1, 3, 32, 32)).shape[-1], tuple(x.shape))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "(1,", "3,", "8,", "8)"]


def test_shim_is_idempotent_and_defines_only_missing_ops():
    from stillroom import _compat

    assert _compat.ensure_torchvision_importable() == []  # second call: nothing left to define
    import torch

    for name in ("nms", "qnms"):
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")


def test_shim_skips_ops_the_extension_registered(monkeypatch):
    """A CUDA torchvision build (0.26 seen on a GPU machine) registers nms from its extension but not qnms, so the
    load attempt "fails": only qnms may be defined then, or define() raises on the duplicate nms."""
    from stillroom import _compat

    registered: set[str] = set()
    defined: list[str] = []

    def fake_extension_loads() -> bool:
        registered.add("nms")  # the extension's side effect
        return False

    class FakeLibrary:
        def define(self, schema: str) -> None:
            name = schema.split("(")[0]
            assert name not in registered, f"{name} defined twice"
            defined.append(name)

    monkeypatch.setattr(_compat, "_has_op", lambda name: name in registered)
    monkeypatch.setattr(_compat, "_extension_loads", fake_extension_loads)
    monkeypatch.setattr(_compat, "_LIB", FakeLibrary())
    monkeypatch.setattr(_compat, "TORCHVISION_SHIMMED", [])
    assert _compat.ensure_torchvision_importable() == ["qnms"]
    assert defined == ["qnms"]
