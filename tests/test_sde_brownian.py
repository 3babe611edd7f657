"""BrownianPath: consistency of queries, the law of its increments, and its counter RNG."""
import math

import pytest
import torch

from pyjode.sde import BrownianPath
from pyjode.sde.keyed_rng import keyed_normals, node_keys, stream_key

def test_queries_are_consistent_in_any_order():
    bm = BrownianPath(0.0, 2.0, (3, 4), seed=7, dtype=torch.float64)
    times = [0.0, 0.37, 1.1, 1.5, 2.0]
    forward = [bm(a, b) for a, b in zip(times[:-1], times[1:])]
    backward = [bm(a, b) for a, b in reversed(list(zip(times[:-1], times[1:])))][::-1]
    for a, b in zip(forward, backward):
        assert torch.equal(a, b)
    # Additivity: overlapping and nested queries come from one path.
    total = bm(0.0, 2.0)
    torch.testing.assert_close(sum(forward), total, rtol=0, atol=1e-14)
    torch.testing.assert_close(bm(0.37, 1.5), bm(0.37, 1.1) + bm(1.1, 1.5), rtol=0, atol=1e-14)
    assert torch.equal(bm(1.1), bm(0.0, 1.1))
    # values() answers in the order asked, repeated times included.
    asked = [1.5, 0.37, 2.0, 0.37, 0.0]
    w = bm.values(asked)
    for k, tk in enumerate(asked):
        assert torch.equal(w[k], bm(tk))
    # The vectorised query agrees with scalar ones, and a fresh object with the same seed replays.
    inc = bm.increments(torch.tensor(times, dtype=torch.float64))
    for k, a in enumerate(forward):
        torch.testing.assert_close(inc[k], a, rtol=0, atol=1e-14)
    again = BrownianPath(0.0, 2.0, (3, 4), seed=7, dtype=torch.float64)
    assert torch.equal(again(0.37, 1.1), bm(0.37, 1.1))
    assert not torch.equal(BrownianPath(0.0, 2.0, (3, 4), seed=8)(0.0, 1.0), bm(0.0, 1.0).float())
    # A float32 path with the same seed is the same path to float32 rounding.
    single = BrownianPath(0.0, 2.0, (3, 4), seed=7, dtype=torch.float32)
    torch.testing.assert_close(single(0.37, 1.1), bm(0.37, 1.1).float(), rtol=1e-5, atol=1e-6)


def test_increment_law():
    """Independent N(0, h) increments, at dyadic and at arbitrary times."""
    n = 40000
    bm = BrownianPath(0.0, 3.0, (n,), seed=1, dtype=torch.float64)
    times = torch.tensor([0.0, 0.2, 0.21, 1.0, 2.7, 3.0], dtype=torch.float64)
    dw = bm.increments(times)
    h = times.diff()
    se = math.sqrt(2.0 / n)                      # standard error of a sample variance / h
    for k in range(len(h)):
        assert abs(dw[k].var().item() / h[k].item() - 1.0) < 4 * se
        assert abs(dw[k].mean().item()) < 4 * math.sqrt(h[k].item() / n)
    corr = torch.corrcoef(dw)
    off_diagonal = corr - torch.diag(torch.diag(corr))
    assert off_diagonal.abs().max().item() < 4 / math.sqrt(n)


def test_bridge_law_at_a_non_dyadic_point():
    """W(s) given W(t1): mean s/t1 W(t1), variance s (t1 - s) / t1 (the Brownian bridge)."""
    n = 40000
    bm = BrownianPath(0.0, 1.0, (n,), seed=2, dtype=torch.float64)
    w = bm.values([0.3, 1.0])
    residual = w[0] - 0.3 * w[1]
    assert abs(residual.var().item() / (0.3 * 0.7) - 1.0) < 4 * math.sqrt(2.0 / n)
    assert abs(torch.corrcoef(torch.stack([residual, w[1]]))[0, 1].item()) < 4 / math.sqrt(n)


def test_memory_does_not_grow_with_queries():
    bm = BrownianPath(0.0, 1.0, (2,), seed=3)
    before = dict(vars(bm))
    for k in range(50):
        bm(k / 100, k / 100 + 0.3)
    assert vars(bm).keys() == before.keys()


def test_dtype_shape_and_errors():
    bm = BrownianPath(0.0, 1.0, (2, 3), seed=0, dtype=torch.float32)
    assert bm(0.1, 0.2).shape == (2, 3) and bm(0.1, 0.2).dtype == torch.float32
    assert bm.increments([0.0, 0.5, 1.0], dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="outside"):
        bm(0.5, 1.5)
    with pytest.raises(ValueError, match="t0 < t1"):
        BrownianPath(1.0, 1.0, (2,))
    with pytest.raises(ValueError, match="seed"):
        BrownianPath(0.0, 1.0, (2,), seed=-1)
    with pytest.raises(TypeError, match="dtype"):
        BrownianPath(0.0, 1.0, (2,), dtype=torch.int64)


def test_keyed_rng_statistics_and_paths_agree():
    key = stream_key(11, 5)
    index = torch.arange(3, dtype=torch.int64) * 977 + (1 << 33)
    # The scalar (Python int) and tensor code paths hash identically.
    small = node_keys(key, index, wide=True)
    large = node_keys(key, torch.cat([index, index]), wide=True)[:3]
    assert torch.equal(small, large)
    z = keyed_normals(node_keys(key, torch.arange(200, dtype=torch.int64)), 500, torch.float64,
                      torch.device("cpu"))
    n = z.numel()
    assert abs(z.mean().item()) < 4 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 4 * math.sqrt(2 / n)
    assert abs((z ** 4).mean().item() - 3) < 4 * math.sqrt(96 / n)
    # Neighbouring elements and neighbouring nodes are uncorrelated.
    assert abs((z[:, 1:] * z[:, :-1]).mean().item()) < 4 / math.sqrt(n)
    assert abs((z[1:] * z[:-1]).mean().item()) < 4 / math.sqrt(n)


def test_grid_noise_law_and_replay():
    """The noise sdeint draws when given no Brownian motion: N(0, h_k) increments, independent across
    steps and chunks, and the same chunk asked twice (as the reversible adjoint does) is the same."""
    from pyjode.sde.grid import CHUNK, GridNoise, increment_chunks

    n = 20000
    noise = GridNoise(torch.Size([n]), seed=3)
    grid = torch.cat([torch.linspace(0.0, 1.0, CHUNK + 1, dtype=torch.float64),
                      torch.tensor([1.3, 2.0], dtype=torch.float64)])
    forward = dict(increment_chunks(noise, grid, torch.float64, torch.device("cpu")))
    backward = dict(increment_chunks(noise, grid, torch.float64, torch.device("cpu"), reverse=True))
    assert forward.keys() == backward.keys() == {0, CHUNK}
    dw = torch.stack([*forward[0], *forward[CHUNK]])
    assert torch.equal(dw, torch.stack([*backward[0], *backward[CHUNK]]))
    h = grid.diff()
    ratio = dw.var(dim=1) / h
    assert (ratio - 1).abs().max().item() < 5 * math.sqrt(2.0 / n)
    # Steps in different chunks, and neighbouring steps, are uncorrelated.
    for a, b in ((0, 1), (CHUNK - 1, CHUNK), (3, CHUNK + 1)):
        assert abs(torch.corrcoef(dw[[a, b]])[0, 1].item()) < 4 / math.sqrt(n)


def test_step_noise_without_a_brownian_motion_has_the_increments_law():
    # The noise pyjode.torchsde draws when no bm is given, on torchsde's latent-SDE example grid (dt = 1e-2 on 100
    # outputs in [0, 2]): ΔW/√h is standard normal, independent across steps and batch rows.
    import math

    from pyjode.sde.dt_grid import dt_grid
    from pyjode.sde.step_noise import StepNoise
    times = [float(t) for t in dt_grid(torch.linspace(0.0, 2.0, 100), 1e-2).times]
    h = torch.tensor(times, dtype=torch.float64).diff().view(-1, 1, 1)
    z = torch.cat([torch.stack(list(StepNoise(None, torch.Size((256, 5)), with_u=False, seed=s).controls(
        times, torch.float64, torch.device("cpu")))) / h.sqrt() for s in range(4)], dim=1)
    n = z.numel()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs((z ** 4).mean().item() / z.var().item() ** 2 - 3) < 5 * math.sqrt(96 / n)
    for a, b in ((z[:-1], z[1:]), (z[:, :-1], z[:, 1:])):
        assert abs(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()) < 5 / math.sqrt(a.numel())
