"""The preference model: the proposal distribution over z and how the user's picks move it.

This first version keeps a diagonal Gaussian over z.  Round 1 spans the prior with a scrambled
Sobol sequence (mapped through the normal inverse CDF) so sixteen candidates cover the space
evenly; ``update`` re-centres the distribution on the chosen z of all rounds, recent rounds
weighing more, and shrinks its spread.  The preferred z (what ``apply`` uses) is the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

RECENCY = 2.0  # each round's picks weigh this much more than the previous round's


@dataclass
class ProposalDistribution:
    mean: torch.Tensor    # (D,)
    spread: torch.Tensor  # (D,) standard deviation per dimension

    @classmethod
    def prior(cls, dim: int) -> ProposalDistribution:
        return cls(torch.zeros(dim), torch.ones(dim))

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """n well-spread z: scrambled Sobol points through the Gaussian's inverse CDF."""
        engine = torch.quasirandom.SobolEngine(self.mean.numel(), scramble=True, seed=seed)
        u = engine.draw(n).double().clamp(1e-4, 1 - 1e-4)
        normal = torch.distributions.Normal(0.0, 1.0).icdf(u).float()
        return self.mean + self.spread * normal

    def update(self, chosen: list[torch.Tensor], shrink: float, min_spread: float) -> ProposalDistribution:
        """Re-centre on the chosen z of every round (a list, oldest first) and narrow the spread."""
        # Each round's picks share that round's recency weight.
        per_round = recency_weights(len(chosen))
        mean = sum(w * z.mean(0) for w, z in zip(per_round, chosen))
        spread = (self.spread * shrink).clamp_min(min_spread)
        return ProposalDistribution(mean, spread)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "spread": self.spread}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ProposalDistribution:
        return cls(tensors["mean"].float(), tensors["spread"].float())


def recency_weights(n_rounds: int) -> torch.Tensor:
    """Normalised weights of rounds 1..n, the latest weighing most."""
    w = torch.tensor([RECENCY**i for i in range(n_rounds)], dtype=torch.float32)
    return w / w.sum()
