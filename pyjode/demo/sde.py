"""Neural SDE on an Ornstein–Uhlenbeck process: train through Wong–Zakai, then sample with sdeint.

The task is the OU experiment of Norcliffe & Deisenroth (2023): dX = (mu t - theta X) dt +
(sigma + phi t) dW with mu = 0.2, theta = 0.1, sigma = 0.6, phi = 0.15 on t in [0, 10] (101
times), X0 ~ U(-3, 3). A neural SDE (drift and diffusion MLPs of (t, x), two hidden layers,
Softplus) is trained as the Wong–Zakai ODE dX/dt = f + g dW_K/dt, with W_K a K = 10 term
cosine series resampled every iteration, solved by dopri5 with the Gauss–Legendre quadrature
adjoint. The loss is the mean over initial conditions and times of KL(model fit || truth)
between the Gaussian fitted to the model's samples and the process's exact Gaussian marginal
(closed form, below). The trained parameters are then used unchanged in
pyjode.sdeint(method="reversible_heun", dt=0.01), whose samples are scored the same way.
"""
from __future__ import annotations

import time
from pathlib import Path
from statistics import median

import torch
from torch import nn

import pyjode
from pyjode.sde import WongZakai, sdeint
from .figures import pyplot, save

MU, THETA, SIGMA, PHI = 0.2, 0.1, 0.6, 0.15
T_END, N_TIMES = 10.0, 101
SOLVER = dict(method="dopri5", rtol=1e-3, atol=1e-3)


def ou_moments(x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and variance of X(t) given X(0) = x0; shapes (len(t), *x0.shape).

    mean: m' = mu t - theta m  =>  m = x0 e^{-theta t} + mu (t/theta - 1/theta^2 + e^{-theta t}/theta^2).
    variance: v' = -2 theta v + s(t)^2, s = sigma + phi t, v(0) = 0  =>  v = P(t) - e^{-2 theta t} P(0)
    with P = p/a - p'/a^2 + p''/a^3, p = s^2, a = 2 theta (so that (e^{a t} P)' = e^{a t} p).
    """
    t = t.to(torch.float64).reshape(-1, *([1] * x0.dim()))
    x0 = x0.to(torch.float64)
    decay = torch.exp(-THETA * t)
    mean = x0 * decay + MU * (t / THETA - 1 / THETA ** 2 + decay / THETA ** 2)
    a = 2 * THETA

    def big_p(s):
        p = (SIGMA + PHI * s) ** 2
        dp = 2 * PHI * (SIGMA + PHI * s)
        ddp = 2 * PHI ** 2
        return p / a - dp / a ** 2 + ddp / a ** 3

    var = big_p(t) - torch.exp(-a * t) * big_p(torch.zeros_like(t))
    return mean, var.expand_as(mean)


class TimeMLP(nn.Module):
    """(t, x) -> R^1 with two hidden Softplus layers, as in the paper's mlp_t."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.Softplus(), nn.Linear(width, width),
                                 nn.Softplus(), nn.Linear(width, 1))

    def forward(self, t, x):
        return self.net(torch.cat([x, t.to(x.dtype).expand_as(x)], dim=-1))


class NeuralSDE(nn.Module):
    noise_type, sde_type = "diagonal", "stratonovich"

    def __init__(self, width: int):
        super().__init__()
        self.drift, self.diffusion = TimeMLP(width), TimeMLP(width)

    def f(self, t, y):
        return self.drift(t, y)

    def g(self, t, y):
        return self.diffusion(t, y)


def gaussian_kl(samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Mean KL(N(fit) || N(mean, var)) over groups; samples (T, groups, per_group, 1)."""
    m = samples.mean(dim=2)
    v = samples.var(dim=2) + 1e-6
    mean, var = mean[..., None].to(m.dtype), var[..., None].to(m.dtype)
    kl = 0.5 * (torch.log(var / v) + (v + (m - mean) ** 2) / var - 1)
    return kl.mean()


def sample_initial(n: int, generator: torch.Generator) -> torch.Tensor:
    return 6 * torch.rand(n, generator=generator) - 3


def times() -> torch.Tensor:
    return torch.linspace(0.0, T_END, N_TIMES, dtype=torch.float64)


def loss_of_paths(paths: torch.Tensor, x0: torch.Tensor, per_group: int) -> torch.Tensor:
    """paths (T, groups * per_group, 1) for x0 (groups,); the first time (a point mass) is skipped."""
    t = times()
    mean, var = ou_moments(x0, t[1:])
    grouped = paths[1:].reshape(len(t) - 1, len(x0), per_group, 1)
    return gaussian_kl(grouped, mean, var)


def expand(x0: torch.Tensor, per_group: int) -> torch.Tensor:
    return x0.repeat_interleave(per_group)[:, None]


def evaluate(sde: NeuralSDE, n_groups: int = 20, per_group: int = 100, seed: int = 123) -> float:
    """KL of reversible-Heun samples (dt = 0.01) of the trained SDE against the exact process."""
    g = torch.Generator().manual_seed(seed)
    x0 = sample_initial(n_groups, g)
    torch.manual_seed(seed)
    with torch.no_grad():
        paths = sdeint(sde, expand(x0, per_group), times().float(), method="reversible_heun",
                       dt=0.01)
    return loss_of_paths(paths, x0, per_group).item()


def train_wong_zakai(width: int, n_iter: int, groups: int = 8, per_group: int = 32,
                     lr: float = 1e-2, n_terms: int = 10, adjoint: str = "quadrature",
                     seed: int = 0, progress: bool = True):
    """Train through the Wong–Zakai ODE; returns (sde, seconds per iteration, losses)."""
    torch.manual_seed(seed)
    sde = NeuralSDE(width)
    field = WongZakai(sde, t0=0.0, t1=T_END, shape=(groups * per_group, 1), n_terms=n_terms,
                      seed=seed)
    opt = torch.optim.Adam(sde.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    t = times().float()
    seconds, losses = [], []
    for _ in _progress(range(n_iter), progress):
        x0 = sample_initial(groups, gen)
        start = time.perf_counter()
        field.resample()
        opt.zero_grad()
        paths = pyjode.odeint(field, expand(x0, per_group), t, adjoint=adjoint, **SOLVER)
        loss = loss_of_paths(paths, x0, per_group)
        loss.backward()
        opt.step()
        seconds.append(time.perf_counter() - start)
        losses.append(loss.item())
    return sde, seconds, losses


def _progress(it, enabled):
    if not enabled:
        return it
    from tqdm import tqdm
    return tqdm(it, leave=False, ncols=80)


def run(out_dir: Path, quick: bool = False) -> None:
    n_iter = 10 if quick else 40
    width = 20
    torch.manual_seed(0)
    untrained = evaluate(NeuralSDE(width))
    sde, seconds, losses = train_wong_zakai(width, n_iter)
    trained = evaluate(sde)
    print(f"OU process, width {width}, {n_iter} iterations of 8 x 32 paths, Wong–Zakai (K=10) "
          "+ dopri5 + quadrature adjoint")
    print("| model | time/iter (s) | train KL (last 10 it.) | KL of sdeint samples |")
    print("|---|---|---|---|")
    print(f"| untrained | - | - | {untrained:.3f} |")
    print(f"| trained through Wong–Zakai | {median(seconds):.3f} | "
          f"{sum(losses[-10:]) / 10:.3f} | {trained:.3f} |")
    _plot(sde, out_dir / "sde_ou.png")


def _plot(sde: NeuralSDE, path: Path) -> None:
    plt = pyplot()

    t = times()
    x0 = torch.tensor([-2.5, 0.0, 2.5])
    per_group = 200
    torch.manual_seed(1)
    with torch.no_grad():
        paths = sdeint(sde, expand(x0, per_group), t.float(), method="reversible_heun", dt=0.01)
    paths = paths.reshape(len(t), len(x0), per_group).double()
    mean, var = ou_moments(x0, t)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, colour in enumerate(("tab:blue", "tab:orange", "tab:green")):
        m, s = mean[:, i], var[:, i].sqrt()
        ax.plot(t, m, color=colour, lw=2, label=f"exact, x0={x0[i].item():g}")
        ax.fill_between(t, m - 2 * s, m + 2 * s, color=colour, alpha=0.15)
        pm, ps = paths[:, i].mean(1), paths[:, i].std(1)
        ax.plot(t, pm, color=colour, ls="--", label="neural SDE (sdeint)")
        ax.plot(t, pm - 2 * ps, color=colour, ls=":", lw=1)
        ax.plot(t, pm + 2 * ps, color=colour, ls=":", lw=1)
        ax.plot(t, paths[:, i, :3], color=colour, lw=0.5, alpha=0.5)
    ax.set_xlabel("t")
    ax.set_ylabel("X")
    ax.set_title("OU process: exact mean ± 2 sd vs the neural SDE trained via Wong–Zakai")
    ax.legend(fontsize=7, ncol=3)
    save(fig, path, dpi=120)
