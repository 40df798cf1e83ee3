"""How the loss network sees a picture's edges.

VGG19 pads each convolution with zeros: to it, every picture sits inside a frame of the ImageNet mean. At a deep layer
of a small picture much of the map lies beside that frame (a 256-px painting's relu5_1 has 16 × 12 positions, half of
them on its border), and there the network responds as to a straight edge. Grams taken over the whole map carry those
responses, and whatever is optimised toward them paints them back: straight lines and rectangles along the deep
layers' grid, and a light or dark line along the picture's own edges.

So styleprefs measures surfaces, not frames: a painting by its interior (:class:`Interior`), and a picture it makes
inside a mirror of itself, with its features kept at its own positions (:func:`framed`, :func:`inside`,
:class:`Mirrored`). Training (``TrainSettings.edges``), the targets and polish all see them so. Polish, which
optimises one picture's pixels and so finds whatever the network answers to, also pads every convolution by
reflection (``polish.PADDING``): with zeros beyond the 16-px mirror, relu5_1 reaches them, and polish draws a faint
straight line one relu5_1 position inside the edges of a large photo's working grid.
"""

from __future__ import annotations

import torch

from .vgg import VGG19Features

MARGIN = 16  # px of a picture mirrored around it, and of a painting's edges left out: a position of relu5_1


def framed(picture: torch.Tensor, margin: int | None = None) -> torch.Tensor:
    """``picture`` (1, 3, h, w) inside a frame of MARGIN px mirrored from it. VGG19, as trained, pads each convolution
    with zeros, a black frame around any picture; optimised against it, the outermost pixels were pushed into a light
    or dark line along every edge. Inside the mirror, the edge pixels have neighbours like those of any other pixel.
    (A picture too small to mirror that far has its edge pixels repeated instead.) ``margin``: other than MARGIN."""
    margin = MARGIN if margin is None else margin
    mode = "reflect" if min(picture.shape[-2:]) > margin else "replicate"
    return torch.nn.functional.pad(picture, (margin,) * 4, mode=mode)


def inside(features: dict[str, torch.Tensor], margin: int | None = None) -> dict[str, torch.Tensor]:
    """The loss network's features without the MARGIN px along each edge. Of a :func:`framed` picture: at the
    picture's own positions, the frame's dropped, so the statistics are the picture's, each pixel counted once
    (counted with its mirror images, the pixels near an edge weighed double in the Grams and grew a speckled strip).
    Of a painting as it is: its interior, away from the zero padding (:class:`Interior`). ``reluN_k`` is
    2^(N−1) px a position. ``margin``: other than MARGIN."""
    margin = MARGIN if margin is None else margin
    out = {}
    for name, x in features.items():
        cut = margin >> (int(name[4]) - 1)
        out[name] = x[..., cut:x.shape[-2] - cut, cut:x.shape[-1] - cut]
    return out


class Interior(torch.nn.Module):
    """A loss network that gives the features of each picture's interior: without the MARGIN px along its edges, which
    lie beside the zero padding (all of a picture under 4 × MARGIN px a side, which has too little interior).

    How training and polish see the paintings they aim at (``training.gram_stats`` over it). Over the whole painting,
    the Grams of its deep layers are largely its edges: optimised toward them, polish grew straight lines and
    rectangles along the 16-px grid of relu5_1 (Gatys's pictures have them too), and the generator blocky rectangles;
    toward the interior's, both grow the painting's own strokes."""

    def __init__(self, net: VGG19Features):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, until: str | None = None) -> dict[str, torch.Tensor]:
        features = self.net(x, until=until)
        return inside(features) if min(x.shape[-2:]) >= 4 * MARGIN else features


class Mirrored(torch.nn.Module):
    """A loss network that sees each picture :func:`framed` and gives its features :func:`inside`, at the picture's
    own positions: as training and polish see the pictures they make."""

    def __init__(self, net: VGG19Features):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, until: str | None = None) -> dict[str, torch.Tensor]:
        return inside(self.net(framed(x), until=until))
