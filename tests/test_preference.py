import torch

from styleprefs.preference import ProposalDistribution


def test_first_round_spans_the_prior():
    z = ProposalDistribution.prior(3).sample(16, seed=1)
    assert z.shape == (16, 3)
    # Quasi-random: every dimension has candidates on both sides of the mean, well spread.
    assert ((z > 0).sum(0) >= 6).all() and ((z < 0).sum(0) >= 6).all()
    assert torch.cdist(z, z).add(torch.eye(16) * 99).min() > 0.2  # no near-duplicates


def test_sampling_is_reproducible():
    d = ProposalDistribution.prior(4)
    assert torch.equal(d.sample(8, seed=3), d.sample(8, seed=3))
    assert not torch.equal(d.sample(8, seed=3), d.sample(8, seed=4))


def test_update_moves_toward_the_chosen_and_narrows():
    d = ProposalDistribution.prior(2)
    chosen = [torch.tensor([[2.0, 0.0], [2.0, 1.0]])]
    d1 = d.update(chosen, shrink=0.5, min_spread=0.1)
    assert torch.allclose(d1.mean, torch.tensor([2.0, 0.5]))
    assert torch.allclose(d1.spread, torch.full((2,), 0.5))
    # The latest round weighs more than the first.
    d2 = d1.update([*chosen, torch.tensor([[-1.0, 0.0]])], shrink=0.5, min_spread=0.3)
    assert d2.mean[0] < 1.0
    assert torch.allclose(d2.spread, torch.full((2,), 0.3))
    samples = d2.sample(64, seed=0)
    assert (samples.mean(0) - d2.mean).abs().max() < 0.15
