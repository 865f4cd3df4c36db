"""Every registered model builds for 1 and 3 input channels with K and K+1 outputs (STYLE 8)."""

import pytest
import torch

from stillroom._io import StillroomError
from stillroom.models.factory import create_model, list_models

FAST = ["resnet18", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "vit_small", "vit_tiny"]


@pytest.mark.parametrize("name", list_models())
def test_registered_model_builds_single_channel(name):
    model = create_model(name, in_chans=1, num_classes=7, img_size=32).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("name", FAST)
def test_three_channels_and_sink_head(name):
    model = create_model(name, in_chans=3, num_classes=8, img_size=32).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 8)


def test_unknown_model_lists_known():
    with pytest.raises(StillroomError, match="resnet18"):
        create_model("resnet9000", 1, 3, 32)


def test_timm_passthrough():
    model = create_model("timm:resnet10t", 1, 4, 32).eval()
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 4)


def test_inference_batches_follow_the_normalizer_device():
    """Evaluation, BN re-estimation and export feed ``iter_batches`` output to a model on the normalizer's device
    (a GPU run failed at its first validation when batches stayed on the CPU); the meta device stands in for CUDA."""
    import numpy as np

    from stillroom.data.dataset import Normalizer
    from stillroom.models.inference import iter_batches

    images = np.zeros((5, 1, 8, 8), dtype=np.uint8)
    batches = list(iter_batches(images, np.arange(5), Normalizer([0.5], [0.5]).to("meta"), 2))
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    assert all(b.device.type == "meta" and b.dtype == torch.float32 for b in batches)


def test_batch_inference_runs_a_channels_last_copy_on_cpu_and_leaves_the_model_alone():
    import numpy as np

    from stillroom.data.dataset import Normalizer
    from stillroom.models.inference import batch_inference_model, predict_logits

    torch.manual_seed(0)
    model = create_model("resnet18", 1, 5, 32).train()  # dense 3x3 weights: the two layouts differ
    net, channels_last = batch_inference_model(model)
    assert channels_last and net is not model
    assert net.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.layer1[0].conv1.weight.is_contiguous()  # the caller's weights keep their layout
    images = np.random.default_rng(0).integers(0, 256, size=(7, 1, 32, 32), dtype=np.uint8)
    norm = Normalizer([0.5], [0.5])
    got = predict_logits(model, norm, images, np.arange(7), batch_size=4)
    assert model.training  # restored
    model.to(memory_format=torch.channels_last)  # already channels-last (the trainer's models): no copy
    assert batch_inference_model(model) == (model, True)
    with torch.no_grad():
        ref = model.eval()(norm(torch.from_numpy(images))).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)  # the same function, other summation order


def test_regnetx_student_is_mobile_sized_and_cuts_for_feature_scores():
    """RegNetX-200MF (``stillroom demo --student regnetx_002``) at the demo's shape: 2.37 M parameters as documented
    (mobilenet_v3_small 1.67 M), and the backbone/head cut the KNN / RMD scores and the ladder need reproduces the
    network's logits from a 4-D feature map."""
    from stillroom.evaluate.feature_ood import split_model
    from stillroom.models.factory import count_parameters

    torch.manual_seed(0)
    model = create_model("regnetx_002", in_chans=1, num_classes=151, img_size=64).eval()
    assert 2.3e6 < count_parameters(model) < 2.45e6
    backbone, head = split_model(model)
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        maps = backbone(x)
        assert maps.ndim == 4 and maps.shape[:2] == (3, 368)
        torch.testing.assert_close(head(maps), model(x))
