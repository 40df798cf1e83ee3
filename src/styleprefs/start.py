"""The shipped starting generator, which every session's ``init`` fine-tunes instead of random weights.

``data/pretrained_generator.safetensors`` (:data:`SHIPPED`) is one generator pretrained on many paintings at once:
as in Dumoulin et al. (2017), the convolutions are shared by all paintings and each painting adds its own learned
embedding to the code that feeds G's FiLM norms. Beside G's weights the file keeps each painting's embedding, a
style descriptor per painting (:func:`descriptor`) and what made it (``meta``).

A session starts from it with :func:`load_start`: the pretraining painting whose style is nearest to the session's
own is picked, and its embedding folded into the norms' biases (:func:`fold_code_shift`), which is exact:
W(c + e) + b = Wc + (We + b). ``init`` then fine-tunes every weight on the session's own paintings and photos.

How the file was made, and how to remake it (``tools/pretrain.py``): docs/pretraining.md.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .config import ConfigError
from .networks import FiLMNorm, Generator

SHIPPED = "pretrained_generator.safetensors"  # in the package's data folder


def descriptor(grams: dict[str, torch.Tensor]) -> torch.Tensor:
    """A small summary of a painting's style: every layer's Gram diagonal (channel energy), each layer scaled to
    unit norm so all layers count alike; (N, Σ C) for N paintings."""
    return torch.cat([torch.nn.functional.normalize(g.diagonal(dim1=-2, dim2=-1).float(), dim=-1)
                      for g in grams.values()], -1)


def decode_meta(tensor: torch.Tensor) -> dict:
    """The JSON a pretraining file keeps as a uint8 tensor named ``meta``."""
    return json.loads(bytes(tensor.tolist()).decode())


def read_export(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """A pretrained generator's file (the shipped one, or one ``tools/pretrain.py`` exported): G's weights, its other
    tensors (``embeddings``, ``descriptors``) and what made it. Raises what safetensors, the file system or the JSON
    decoder raise on a file that is not one."""
    tensors = load_file(path)
    meta = decode_meta(tensors.pop("meta"))
    return {k[2:]: v for k, v in tensors.items() if k.startswith("g.")}, tensors, meta


def shipped_path() -> Path:
    return Path(str(resources.files("styleprefs") / "data" / SHIPPED))


def load_start(generator: Generator, style_grams: dict[str, torch.Tensor], start: str | Path = "pretrained") -> str | None:
    """Load the pretrained weights into ``generator`` in place, starting from the embedding of the pretraining
    painting nearest to the session's paintings (by :func:`descriptor`). ``start`` is ``TrainSettings.start``:
    "pretrained" (the shipped file) or a file ``tools/pretrain.py --export-to`` wrote. Returns that painting's name,
    or None (G left as it is) when no such file fits this generator's shape, or it used a layer the session lacks."""
    path = shipped_path() if start == "pretrained" else Path(start)
    if not path.is_file():
        return None
    try:
        weights, shipped, meta = read_export(path)
    except (SafetensorError, OSError, ValueError, KeyError) as exc:  # JSONDecodeError and UnicodeError are ValueErrors
        raise ConfigError(f"{path}: not a pretrained generator's file ({exc})") from None
    own = generator.state_dict()
    if not set(meta["style_layers"]) <= set(style_grams) or set(weights) != set(own) or any(
            weights[k].shape != own[k].shape for k in own if k != "mapping.0.weight"):
        return None
    # z has blend dimensions after the three named ones when a session has several paintings: they start at
    # zero, so every blend begins as the nearest painting's look and init teaches what each axis means.
    first = torch.zeros_like(own["mapping.0.weight"])
    first[:, : weights["mapping.0.weight"].shape[1]] = weights["mapping.0.weight"][:, : first.shape[1]]
    weights["mapping.0.weight"] = first
    generator.load_state_dict(weights)
    # The nearest painting by the layers pretraining used (a session may match more layers than those).
    mine = descriptor({k: style_grams[k].mean(0, keepdim=True) for k in meta["style_layers"]})
    nearest = int(torch.cdist(mine, shipped["descriptors"]).argmin())
    fold_code_shift(generator, shipped["embeddings"][nearest])
    return meta["paintings"][nearest]


@torch.no_grad()
def fold_code_shift(generator: Generator, shift: torch.Tensor) -> None:
    """Make ``generator(x, z)`` what ``generator(x, z, code_shift=shift)`` was, by moving the shift into the biases."""
    for module in generator.modules():
        if isinstance(module, FiLMNorm):
            linear = module.to_scale_shift
            linear.bias += linear.weight @ shift.to(linear.weight)
