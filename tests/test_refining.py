"""refine's personal target and batch plan, on tensors (the session-level behaviour is in test_preference.py)."""

import torch

from styleprefs import controls, refining
from styleprefs.preference import recency_weights
from styleprefs.training import blended_targets

LAYERS = ("a", "b")


def grams(n: int, seed: int, c: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(n, c, c, generator=g) for name in LAYERS}


def test_the_target_moves_the_look_toward_each_rounds_picks_by_recency_within_the_trust_region():
    look, chosen, passed = grams(1, 0), [grams(3, 1), grams(3, 2)], [grams(1, 3), grams(1, 4)]
    w = recency_weights(2)
    direction = {n: w[0] * (chosen[0][n].mean(0) - passed[0][n][0]) + w[1] * (chosen[1][n].mean(0) - passed[1][n][0])
                 for n in LAYERS}

    unbounded = refining.personal_target(look, chosen, passed, LAYERS, step=0.1, reach=1e6)
    for n in LAYERS:
        torch.testing.assert_close(unbounded[n], look[n][0] + 0.1 * direction[n])

    bounded = refining.personal_target(look, chosen, passed, LAYERS, step=50.0, reach=0.05)
    for n in LAYERS:
        move = bounded[n] - look[n][0]
        assert abs(float(move.norm()) - 0.05 * float(look[n][0].norm())) < 1e-5  # held at the region's edge...
        cosine = torch.nn.functional.cosine_similarity(move.flatten(), direction[n].flatten(), dim=0)
        assert cosine > 0.9999  # ...in the direction the picks point


def test_a_round_whose_every_candidate_was_chosen_adds_no_direction():
    look, chosen = grams(1, 0), [grams(2, 1), grams(2, 2)]
    only_second = refining.personal_target(look, chosen, [None, grams(1, 4)], LAYERS, step=0.1, reach=1e6)
    w = recency_weights(2)
    for n in LAYERS:
        torch.testing.assert_close(only_second[n], look[n][0] + 0.1 * w[1] * (chosen[1][n].mean(0) - grams(1, 4)[n][0]))
    nothing = refining.personal_target(look, chosen, [None, None], LAYERS, step=0.1, reach=1e6)
    for n in LAYERS:
        torch.testing.assert_close(nothing[n], look[n][0])


def test_a_batch_trains_its_first_part_near_the_preferred_look_toward_the_target_and_the_rest_on_the_prior():
    paintings = grams(2, 5)
    base = blended_targets(paintings, 2)
    best_z = torch.full((6,), 1.5)
    personal = {n: torch.full((4, 4), 7.0) for n in LAYERS}
    plan = refining.BatchPlan(best_z, personal, base, half=2, n_layers=len(LAYERS), n_styles=2, colour_centre=1.5)

    z = plan.sample_z(5, torch.Generator().manual_seed(0))
    assert z.shape == (5, 6)
    assert (z[:3] - best_z).abs().max() < 2.0 < (z[3:] - best_z).abs().max()  # three near z*, two from N(0, 1)

    targets, prior = plan.targets(z), base(z)
    for n in LAYERS:
        torch.testing.assert_close(targets[n][:3], personal[n].expand(3, -1, -1))
        torch.testing.assert_close(targets[n][3:], prior[n][3:])

    weights, own = plan.loss_weights(z), controls.loss_weights(z, len(LAYERS), 2, 1.5)
    assert (weights.colour[:3] == 0).all()  # the picked palette, not the photo's colours
    torch.testing.assert_close(weights.colour[3:], own.colour[3:])
    torch.testing.assert_close(weights.layers, own.layers)  # stroke dial and strength stay z's own
    torch.testing.assert_close(weights.strength, own.strength)
