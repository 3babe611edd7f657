"""BrownianInterval: the law of its bridge (with and without space-time Lévy area), its determinism under any
query order and any cache eviction, and its float32/float64 agreement."""
import math

import pytest
import torch

from pyjode.sde.brownian_interval import BrownianInterval

F64 = torch.float64


def _residual_moments(x: torch.Tensor):
    return x.mean().item(), x.var().item()


@pytest.mark.parametrize("levy", ["none", "space-time"])
def test_bridge_between_given_end_values_has_the_exact_conditional_law(levy):
    # Given W = W_1 and H = ∫_0^1 (W_s − s W_1) ds on [0, 1], the bridge B_t = W_t − t W_1 has
    # Cov(B_t, B_s) = min(s, t) − st and Cov(B_t, H) = t(1 − t)/2 with Var H = 1/12, so
    #   E[W_t | W, H] = t W + 6 t(1 − t) H,   Var[W_t | W, H] = t(1 − t) − 3 t²(1 − t)²;
    # without H (levy "none") the variance is t(1 − t).
    n = 40000
    gen = torch.Generator().manual_seed(0)
    w_end = torch.randn(n, generator=gen, dtype=F64)
    h_end = torch.randn(n, generator=gen, dtype=F64) / math.sqrt(12)
    bm = BrownianInterval(0.0, 1.0, W=w_end, H=h_end if levy != "none" else None, entropy=11,
                          levy_area_approximation=levy)
    s, t = 0.3, 0.71  # not dyadic: each ends a 32-level descent
    ws, wt = bm(s), bm(t)
    if levy == "none":
        mean_s, mean_t = s * w_end, t * w_end
        var_s, var_t, cov = s * (1 - s), t * (1 - t), s - s * t
    else:
        mean_s, mean_t = s * w_end + 6 * s * (1 - s) * h_end, t * w_end + 6 * t * (1 - t) * h_end
        var_s, var_t = s * (1 - s) - 3 * (s * (1 - s)) ** 2, t * (1 - t) - 3 * (t * (1 - t)) ** 2
        cov = s - s * t - 3 * s * (1 - s) * t * (1 - t)
    rs, rt = ws - mean_s, wt - mean_t
    # sampling error of a variance estimate: sqrt(2/n) = 0.7%; of a mean: sqrt(var/n) ~ 0.0025
    for r, var in ((rs, var_s), (rt, var_t)):
        m, v = _residual_moments(r)
        assert abs(m) < 5 * math.sqrt(var / n)
        assert abs(v / var - 1) < 5 * math.sqrt(2 / n)
    assert abs((rs * rt).mean().item() - cov) < 5 * math.sqrt(var_s * var_t / n)
    assert torch.equal(bm(1.0), w_end)


def test_space_time_area_of_a_subinterval_has_its_law_and_is_independent_of_the_increment():
    n = 40000
    bm = BrownianInterval(0.0, 2.0, size=(n,), dtype=F64, entropy=4, levy_area_approximation="space-time")
    a, b = 0.37, 1.52
    w, u = bm(a, b, return_U=True)
    h = b - a
    hh = u / h - 0.5 * w
    assert abs(w.var().item() / h - 1) < 5 * math.sqrt(2 / n)
    assert abs(hh.var().item() / (h / 12) - 1) < 5 * math.sqrt(2 / n)
    assert abs(torch.corrcoef(torch.stack([w, hh]))[0, 1].item()) < 5 / math.sqrt(n)
    # increments over disjoint intervals are independent
    w2 = bm(b, 1.9)
    assert abs(torch.corrcoef(torch.stack([w, w2]))[0, 1].item()) < 5 / math.sqrt(n)


@pytest.mark.parametrize("levy", ["none", "space-time", "foster"])
def test_values_do_not_depend_on_query_order_or_cache_eviction(levy):
    gen = torch.Generator().manual_seed(1)
    pairs = torch.rand(60, 2, generator=gen, dtype=F64).sort(dim=1).values.tolist()
    kwargs = dict(t0=0.0, t1=1.0, size=(64, 3), dtype=F64, entropy=1234, levy_area_approximation=levy)
    first = BrownianInterval(**kwargs)
    first._cache_entries, first._points_entries = 8, 4  # evict almost everything: values must be recomputed identically
    want_u = levy != "none"
    out = [first(a, b, return_U=True) if want_u else first(a, b) for a, b in pairs]
    second = BrownianInterval(**kwargs)
    for (a, b), o in reversed(list(zip(pairs, out))):
        got = second(a, b, return_U=True) if want_u else second(a, b)
        for x, y in zip(got if want_u else (got,), o if want_u else (o,)):
            assert torch.equal(x, y)
    # additivity holds exactly on the dyadic times queries round to
    a, m, b = 0.1, 0.45, 0.8
    torch.testing.assert_close(second(a, m) + second(m, b), second(a, b), rtol=0, atol=1e-14)
    assert not torch.equal(BrownianInterval(**{**kwargs, "entropy": 1235})(a, b), second(a, b))


def test_float32_path_is_the_float64_path_rounded():
    kwargs = dict(t0=-1.0, t1=3.0, size=(5, 2), entropy=77, levy_area_approximation="space-time")
    single, double = BrownianInterval(dtype=torch.float32, **kwargs), BrownianInterval(dtype=F64, **kwargs)
    for a, b in ((-1.0, 0.3), (0.3, 0.31), (2.0, 3.0)):
        w32, u32 = single(a, b, return_U=True)
        w64, u64 = double(a, b, return_U=True)
        assert w32.dtype == torch.float32 and torch.equal(w32, w64.float()) and torch.equal(u32, u64.float())


def test_bad_end_values_are_refused():
    with pytest.raises(ValueError, match="W must have 6 elements"):
        BrownianInterval(0.0, 1.0, size=(2, 3), W=torch.zeros(5))
    with pytest.raises(ValueError, match="levy_area_approximation='space-time'"):
        BrownianInterval(0.0, 1.0, W=torch.zeros(3), H=torch.zeros(3))


def test_a_query_shorter_than_the_default_resolution_raises_and_tol_resolves_it():
    """With the default resolution (2**-32 of the span) a query of 1e-11 used to round to length 0 and return
    a zero increment, and one of 1e-9 to a length up to 23% off (its variance as far off), silently. A query
    whose length is off by more than 1% now raises a ValueError naming tol; with tol the tree is deep enough
    and the variance is h."""
    bm = BrownianInterval(0.0, 1.0, size=(20000,), dtype=torch.float64, entropy=1)
    for h in (1e-11, 1e-9):
        with pytest.raises(ValueError, match=r"too short for the path's resolution.*tol="):
            bm(0.3, 0.3 + h)
    # a length the dyadic points carry exactly, an ordinary one, and a floating-point sliver (a step grid
    # accumulated just short of an output time) are answered
    assert bm(0.5, 0.5 + 2.0 ** -32).abs().max() > 0
    assert bm(1.0 - 4e-16, 1.0).abs().max() == 0
    w = bm(0.3, 0.301)
    assert abs(w.var().item() / 1e-3 - 1) < 0.05
    fine = BrownianInterval(0.0, 1.0, size=(20000,), dtype=torch.float64, entropy=1, tol=1e-14)
    for h in (1e-11, 1e-9):
        w = fine(0.3, 0.3 + h)
        assert abs(w.var().item() / h - 1) < 0.05  # N(0, h): the sample variance within 5% (std 1%)
