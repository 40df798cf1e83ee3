"""The preference model: a Bayesian choice model of every pick so far, and the proposals drawn from it.

Each round shows N candidates, each rendered at its own z, and the user picks k of them. A pick is
read as a Plackett–Luce (multinomial-logit) choice: the chosen candidate was preferred to every
candidate left unchosen, so one round gives k choice terms and the unchosen candidates are
evidence too. The utility is linear in features of z,

    u(z) = wᵀ φ(z),   φ(z) = [t, t²],   t = tanh(z / 2)

(the squashing follows how ``controls`` saturates each dial; t² lets a taste sit mid-dial). With a
Gaussian prior w ~ N(0, σ²I), the posterior is approximated by Laplace's method: a Gaussian at the
MAP found by Newton's method (the log-likelihood is concave in w), with the inverse Hessian as
covariance.

Proposals: round 1, with nothing learned, is a scrambled Sobol design through the normal inverse
CDF, so N candidates span the prior evenly (``controls.first_round`` then folds its strength onto the bold half and
spreads the exact dials wider). Later rounds use Thompson sampling (as in preferential
Bayesian optimisation): candidate 1 is the posterior mean's best z, and each further candidate is
the best z of a quasi-random pool under its own draw of w, skipping any z within ``MIN_DISTANCE`` of
one already in the round, so a round never shows near-duplicates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import controls
from .config import STYLE_LAYERS

PRIOR_SD = 2.0       # σ of the prior over the utility weights
BOUND = 2.5          # proposed and preferred z stay in the prior's bulk: |z_i| ≤ BOUND
MIN_DISTANCE = 0.5   # no two candidates of a round closer than this in z
POOL = 4096          # quasi-random z each Thompson draw chooses from
NEAR_SPREAD = 0.3    # refine trains half its batch at z within about this of the preferred z
RECENCY = 2.0        # personal Gram target: each round's picks weigh this much more than the previous round's
NOTABLE = 0.35       # |Δz| on a dial worth putting into words


@dataclass
class Choice:
    """One round as evidence: the z of its candidates and which of them were picked (0-based)."""

    z: torch.Tensor      # (N, D)
    chosen: list[int]


def features(z: torch.Tensor) -> torch.Tensor:
    """φ(z) = [t, t²] with t = tanh(z/2), in float64: (…, D) → (…, 2D)."""
    t = torch.tanh(z.double() / 2)
    return torch.cat([t, t * t], -1)


def log_likelihood(w: torch.Tensor, choices: list[Choice]) -> torch.Tensor:
    """Σ over rounds and picks i of log P(i chosen from {i} ∪ unchosen) = u_i − log Σ exp(u) (Luce's choice rule)."""
    total = w.new_zeros(())
    for choice in choices:
        u = features(choice.z) @ w
        picked = torch.zeros(u.numel(), dtype=torch.bool)
        picked[choice.chosen] = True
        u_chosen, u_unchosen = u[picked], u[~picked]
        if u_unchosen.numel() == 0:
            continue  # everything chosen: no preference expressed
        options = torch.cat([u_chosen[:, None], u_unchosen.expand(u_chosen.numel(), -1)], 1)
        total = total + (u_chosen - torch.logsumexp(options, 1)).sum()
    return total


def fit(choices: list[Choice], dim: int, prior_sd: float = PRIOR_SD) -> Posterior:
    """Laplace posterior over w: MAP by damped Newton steps, covariance = inverse Hessian there."""
    n_features = 2 * dim
    prior = torch.eye(n_features, dtype=torch.float64) / prior_sd**2
    choices = [c for c in choices if c.chosen]
    if not choices:
        return Posterior.prior(dim, prior_sd)

    def objective(w: torch.Tensor) -> torch.Tensor:  # negative log posterior, up to a constant
        return -log_likelihood(w, choices) + 0.5 * w @ prior @ w

    w = torch.zeros(n_features, dtype=torch.float64)
    for _ in range(50):
        grad = torch.autograd.functional.jacobian(objective, w)
        hess = torch.autograd.functional.hessian(objective, w)
        step = torch.linalg.solve(hess, grad)
        decrease = float(grad @ step)
        if decrease < 1e-10:
            break
        value, scale = float(objective(w)), 1.0
        while float(objective(w - scale * step)) > value - 1e-4 * scale * decrease and scale > 1e-6:
            scale /= 2  # backtracking (Armijo) line search
        w = w - scale * step
    hess = torch.autograd.functional.hessian(objective, w)
    cov = torch.linalg.inv(hess)
    return Posterior(w, (cov + cov.T) / 2, dim, sum(len(c.chosen) for c in choices))


def sobol_normal(n: int, dim: int, seed: int) -> torch.Tensor:
    """n well-spread z from N(0, I): scrambled Sobol points through the Gaussian's inverse CDF."""
    engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed)
    u = engine.draw(n).double().clamp(1e-4, 1 - 1e-4)
    return torch.distributions.Normal(0.0, 1.0).icdf(u).float()


@dataclass
class Posterior:
    """N(mean, cov) over the utility weights w, and how many picks it has learned from."""

    mean: torch.Tensor  # (2D,)
    cov: torch.Tensor   # (2D, 2D)
    dim: int            # D, the dimension of z
    picks: int

    @classmethod
    def prior(cls, dim: int, prior_sd: float = PRIOR_SD) -> Posterior:
        return cls(torch.zeros(2 * dim, dtype=torch.float64),
                   torch.eye(2 * dim, dtype=torch.float64) * prior_sd**2, dim, 0)

    def utility(self, z: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        return features(z) @ (self.mean if w is None else w)

    def spread(self) -> float:
        """Mean posterior standard deviation of the weights: shrinks as picks accumulate."""
        return float(self.cov.diagonal().sqrt().mean())

    def best_z(self) -> torch.Tensor:
        """argmax over |z_i| ≤ BOUND of the posterior mean utility (exact: it is a quadratic in each t_i). A dial the
        picks say nothing of (both its weights 0) stays at its centre."""
        if self.picks == 0:
            return torch.zeros(self.dim)
        a, b = self.mean[: self.dim], self.mean[self.dim :]
        edge = math.tanh(BOUND / 2)
        vertex = torch.where(b < 0, -a / (2 * b).clamp(max=-1e-12), torch.zeros_like(a))
        options = [vertex.clamp(-edge, edge), torch.full_like(a, -edge), torch.full_like(a, edge)]  # ties: the first
        t = torch.stack(options)                         # (3, D) candidate t per dimension
        value = a * t + b * t * t
        best = t.gather(0, value.argmax(0, keepdim=True))[0]
        return (2 * torch.atanh(best)).float()

    def propose(self, n: int, seed: int) -> torch.Tensor:
        """n candidate z: a Sobol design before any pick; afterwards the best z, then Thompson draws."""
        if self.picks == 0:
            return sobol_normal(n, self.dim, seed)
        pool = sobol_normal(POOL, self.dim, seed).clamp(-BOUND, BOUND)
        rng = torch.Generator().manual_seed(seed)
        eps = torch.randn(n, self.mean.numel(), generator=rng, dtype=torch.float64)
        w = self.mean + eps @ torch.linalg.cholesky(self.cov).T  # n draws from the posterior
        scores = self.utility(pool, w.T)                  # (POOL, n)
        picked = [self.best_z()]
        for j in range(1, n):
            taken = torch.stack(picked)
            far = torch.cdist(pool, taken).min(1).values >= MIN_DISTANCE
            if far.any():
                picked.append(pool[far][scores[far, j].argmax()])
            else:  # the pool is crowded out: the point farthest from the round so far
                picked.append(pool[torch.cdist(pool, taken).min(1).values.argmax()])
        return torch.stack(picked)

    def confidence(self, z: torch.Tensor, reference: torch.Tensor) -> float:
        """Posterior probability that z is liked more than ``reference``: Φ(E[Δu] / sd[Δu])."""
        d = features(z) - features(reference)
        sd = float((d @ self.cov @ d).clamp_min(1e-12).sqrt())
        return 0.5 * (1 + math.erf(float(d @ self.mean) / sd / math.sqrt(2)))

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "cov": self.cov, "picks": torch.tensor(self.picks)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Posterior:
        mean = tensors["mean"].double()
        return cls(mean, tensors["cov"].double(), mean.numel() // 2, int(tensors["picks"]))


def describe(z: torch.Tensor, style_names: list[str]) -> list[str]:
    """The preferred z in words, against the default look (z = 0, the prior's centre), on the dials whose meaning
    holds in the pictures: strength ("bolder") and palette. How fine the strokes look is measured on the pictures
    themselves (``looks``), since the stroke dial's effect on visible detail varies from painting to painting."""
    words = {1: ("more subtle", "bolder"), 2: ("more of the painting's palette", "more of the photo's own colours")}
    phrases = [words[i][int(z[i] > 0)] for i in words if abs(float(z[i])) >= NOTABLE]
    if len(style_names) > 1:
        blend = controls.loss_weights(z[None], len(STYLE_LAYERS), len(style_names)).blend[0]
        k = int(blend.argmax())
        if float(blend[k]) >= 1 / len(style_names) + 0.1:
            phrases.append(f"closer to painting {k + 1} ({style_names[k]})")
    return phrases


# What a person sees in a candidate, measured on its pixels, with the words for less and more of it.
LOOKS = {"warmth": ("cooler colours", "warmer colours"),
         "saturation": ("more muted colours", "more saturated colours"),
         "detail": ("broader, smoother strokes", "finer detail")}
NOTABLE_LOOK = 0.5   # a difference between picks and passed-over candidates, in the round's sd, worth words


def looks(image: torch.Tensor) -> dict[str, float]:
    """Warmth (mean R − B), saturation (mean HSV S) and detail (energy of a σ = 1 px high-pass over that of a
    σ = 4 px one: the share of the texture at the finest scale) of one (3, H, W) image in [0, 1]."""
    from torchvision.transforms.functional import gaussian_blur  # here: importing torchvision takes a while

    grey = image.mean(0, keepdim=True)[None]
    fine = (grey - gaussian_blur(grey, [7, 7], [1.0, 1.0])).square().mean()
    coarse = (grey - gaussian_blur(grey, [25, 25], [4.0, 4.0])).square().mean()
    high, low = image.amax(0), image.amin(0)
    return {"warmth": float((image[0] - image[2]).mean()),
            "saturation": float(((high - low) / high.clamp_min(1e-6)).mean()),
            "detail": float(fine / coarse.clamp_min(1e-12))}


def contrast_looks(chosen: list[dict[str, float]], passed: list[dict[str, float]]) -> dict[str, float]:
    """How the picks of one round differ from the candidates passed over, per look, in the round's sd."""
    out = {}
    for name in LOOKS:
        a = torch.tensor([c[name] for c in chosen], dtype=torch.float64)
        b = torch.tensor([c[name] for c in passed], dtype=torch.float64)
        spread = float(torch.cat([a, b]).std()) if len(a) + len(b) > 1 else 0.0
        out[name] = round(float(a.mean() - b.mean()) / spread, 3) if passed and spread > 0 else 0.0
    return out


def describe_looks(per_round: list[dict[str, float]]) -> list[str]:
    """The looks the picks differ in, recency-weighted over rounds, in words ("warmer colours", …)."""
    if not per_round:
        return []
    weights = recency_weights(len(per_round))
    phrases = []
    for name, (less, more) in LOOKS.items():
        effect = sum(float(w) * r.get(name, 0.0) for w, r in zip(weights, per_round, strict=True))
        if abs(effect) >= NOTABLE_LOOK:
            phrases.append(more if effect > 0 else less)
    return phrases


def describe_taste(posterior: Posterior | None, z: torch.Tensor | None, styles: list[str],
                   round_looks: list[dict[str, float]], stroke_scale: float | None = None) -> dict:
    """What the choice model has learned, in words, and how sure it is; and what the picks look like."""
    if posterior is None or posterior.picks == 0:
        return {"summary": "nothing learned yet: select the candidates you like, then refine", "picks": 0}
    words = describe(z, styles)
    if stroke_scale is not None and not 0.8 < stroke_scale < 1.25:
        words.append(f"{'larger' if stroke_scale > 1 else 'smaller'} strokes for the image's size "
                     f"(×{stroke_scale:.2f})")
    sure = posterior.confidence(z, torch.zeros_like(z))
    summary = ("; ".join(f"{w} than the default look" if i == 0 else w for i, w in enumerate(words))
               if words else "close to the default look")
    seen = describe_looks(round_looks)
    if seen:
        listed = seen[0] if len(seen) == 1 else f"{', '.join(seen[:-1])} and {seen[-1]}"
        summary += f"; your picks have {listed} than the ones you passed over"
    return {"summary": summary, "picks": posterior.picks, "confidence": round(sure, 3),
            "posterior_sd": round(posterior.spread(), 3)}


def recency_weights(n_rounds: int) -> torch.Tensor:
    """Normalised weights of rounds 1..n, the latest weighing most."""
    w = torch.tensor([RECENCY**i for i in range(n_rounds)], dtype=torch.float32)
    return w / w.sum()
