"""Backward NFE of the continuous adjoint with the seminorm against the classic norm, on a 2-D CNF.

Set-up (the generative-modelling task of Kidger, Chen & Lyons, ICML 2021, at toy scale): a continuous
normalising flow on two moons. The vector field g(t, z) is an MLP [z, t] -> 64 -> 64 -> 2 (tanh); the
solved state is one tensor s = [z, Δlogp] of shape (batch, 3) with

    dz/dt = g(t, z),   dΔlogp/dt = -tr(∂g/∂z),

the trace exact, from forward-mode tangents through the MLP (two directions, no second autograd pass).
Data x at t = 1 is solved back to t = 0 and log p(x) = log N(z(0); 0, I) - Δlogp(0); the loss is the mean
negative log-likelihood. Training: Adam (lr 1e-2), batch 256, dopri5 at rtol = atol = 1e-5, gradients
by ``pyjode.Backsolve(norm="seminorm")`` and, from the same initial weights and the same data batches, by
``pyjode.Backsolve(norm="rms")``. The seminorm leaves the 4.5 k parameter-adjoint channels out of step
control; the rms norm takes the max of the RMS of [z, Δlogp], of its adjoint and of every parameter
tensor's adjoint (torchdiffeq's default adjoint norm). Finally one gradient of the seminorm-trained model
is taken at several tolerances with both norms and with the quadrature adjoint.

    python -m benchmarks.bench_seminorm_cnf [--quick] [--iters N] [--rtol R] [--atol A]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

import pyjode
from pyjode.norms import PartsNorm, rms_norm

RTOL, ATOL = 1e-5, 1e-5
BATCH, HIDDEN = 256, 64
#: (rtol, atol) pairs at which one gradient of the trained model is compared
PROBE_TOLERANCES = ((1e-5, 1e-5), (1e-5, 1e-8), (1e-3, 1e-5), (1e-7, 1e-9))


class CNF(nn.Module):
    """The CNF field on s = [z, Δlogp]; the trace of the MLP's Jacobian by forward-mode tangents."""

    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(3, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 2)

    def forward(self, t, s):
        z = s[:, :2]
        tz = torch.cat([z, t.expand(z.shape[0], 1)], dim=1)
        h1 = torch.tanh(self.l1(tz))
        h2 = torch.tanh(self.l2(h1))
        dz = self.l3(h2)
        # tangents of h1, h2, dz along the two z directions: (batch, hidden, 2)
        d1 = (1 - h1 * h1).unsqueeze(-1) * self.l1.weight[:, :2]
        d2 = (1 - h2 * h2).unsqueeze(-1) * torch.einsum("ij,bjk->bik", self.l2.weight, d1)
        jac = torch.einsum("ij,bjk->bik", self.l3.weight, d2)  # (batch, 2, 2)
        trace = jac.diagonal(dim1=1, dim2=2).sum(-1, keepdim=True)
        return torch.cat([dz, -trace], dim=1)


def two_moons(n: int, generator: torch.Generator) -> torch.Tensor:
    theta = math.pi * torch.rand(n, generator=generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 2.0
    return pts + 0.1 * torch.randn(n, 2, generator=generator)


def nll(func, x, adjoint, stats=None, rtol=RTOL, atol=ATOL):
    s1 = torch.cat([x, torch.zeros(x.shape[0], 1)], dim=1)
    s0 = pyjode.odeint(func, s1, torch.tensor([1.0, 0.0]), rtol=rtol, atol=atol, adjoint=adjoint, stats=stats)[-1]
    z0, dlogp = s0[:, :2], s0[:, 2]
    logp = -0.5 * (z0 * z0).sum(1) - math.log(2 * math.pi) - dlogp
    return -logp.mean()


def train(norm: str, iters: int, rtol: float, atol: float, seed: int = 0):
    torch.manual_seed(seed)
    func = CNF()
    opt = torch.optim.Adam(func.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(seed + 1)
    adjoint = pyjode.Backsolve(norm=norm)
    losses, nfe_b, nfe_f = [], [], []
    start = time.perf_counter()
    for _ in range(iters):
        stats = pyjode.Stats()
        opt.zero_grad()
        loss = nll(func, two_moons(BATCH, data), adjoint, stats, rtol, atol)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        nfe_f.append(stats.nfe_forward)
        nfe_b.append(stats.nfe_backward)
    return func, dict(losses=losses, nfe_b=nfe_b, nfe_f=nfe_f, seconds=time.perf_counter() - start)


def gradient_stats(func, x, adjoint, rtol, atol) -> pyjode.Stats:
    stats = pyjode.Stats()
    func.zero_grad()
    nll(func, x, adjoint, stats, rtol, atol).backward()
    return stats


def torchdiffeq_backward_nfe(func, x, rtol, atol, adjoint_options=None) -> int:
    """Backward NFE of torchdiffeq's own odeint_adjoint on the same model and loss (a reference)."""
    import torchdiffeq

    calls = [0]

    def counted(t, s):
        calls[0] += 1
        return func(t, s)

    s1 = torch.cat([x, torch.zeros(x.shape[0], 1)], dim=1)
    func.zero_grad()
    s0 = torchdiffeq.odeint_adjoint(counted, s1, torch.tensor([1.0, 0.0]), rtol=rtol, atol=atol,
                                    adjoint_options=adjoint_options, adjoint_params=tuple(func.parameters()))[-1]
    forward = calls[0]
    z0, dlogp = s0[:, :2], s0[:, 2]
    (-(-0.5 * (z0 * z0).sum(1) - math.log(2 * math.pi) - dlogp).mean()).backward()
    return calls[0] - forward


def norm_components(func, x, rtol, atol):
    """Which part sets the classic norm: on one rms-norm backward solve, how often each part is the max."""
    import pyjode.adjoints.backsolve as bs

    counts = {}
    names = ["state", "adjoint"] + [f"a_{n}" for n, _ in func.named_parameters()]

    class Spy(PartsNorm):
        def __call__(self, x):
            x = x.reshape(-1)
            parts = torch.stack([rms_norm(x[a:b]) for a, b in self.slices])
            if len(self.slices) == len(names):
                key = names[int(parts.argmax())]
                counts[key] = counts.get(key, 0) + 1
            return parts.max()

    original = bs.PartsNorm
    bs.PartsNorm = Spy
    try:
        gradient_stats(func, x, pyjode.Backsolve(norm="rms"), rtol, atol)
    finally:
        bs.PartsNorm = original
    return counts


def _window(values, i, width=10):
    lo = max(0, i - width + 1)
    chunk = values[lo:i + 1]
    return sum(chunk) / len(chunk)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 iterations")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rtol", type=float, default=RTOL)
    parser.add_argument("--atol", type=float, default=ATOL)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    iters = args.iters or (30 if args.quick else 250)
    rtol, atol = args.rtol, args.atol

    runs = {}
    for norm in ("seminorm", "rms"):
        runs[norm] = train(norm, iters, rtol, atol)
    semi, rms = runs["seminorm"][1], runs["rms"][1]
    n_params = sum(p.numel() for p in runs["seminorm"][0].parameters())

    print(f"2-D CNF on two moons, MLP 3-{HIDDEN}-{HIDDEN}-2 tanh ({n_params} parameters), exact trace, batch {BATCH}, "
          f"dopri5 rtol={rtol:g} atol={atol:g}, Adam lr 1e-2, {iters} iterations from the same initial weights and batches; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| iteration | loss seminorm | loss rms | NFE bwd seminorm | NFE bwd rms | seminorm / rms |")
    print("|---:|---:|---:|---:|---:|---:|")
    checkpoints = sorted({min(iters - 1, c) for c in (0, iters // 5, 2 * iters // 5, 3 * iters // 5, 4 * iters // 5,
                                                     iters - 1)})
    for i in checkpoints:
        a, b = _window(semi["nfe_b"], i), _window(rms["nfe_b"], i)
        print(f"| {i + 1} | {_window(semi['losses'], i):.4f} | {_window(rms['losses'], i):.4f} | {a:.0f} | {b:.0f} "
              f"| {a / b:.2f} |")
    mean_s, mean_r = sum(semi["nfe_b"]) / iters, sum(rms["nfe_b"]) / iters
    last = max(1, iters // 10)
    end_s, end_r = sum(semi["nfe_b"][-last:]) / last, sum(rms["nfe_b"][-last:]) / last
    print("\n(losses and NFE are means over the 10 iterations ending at the checkpoint)\n")
    print("| | seminorm | rms | reduction |")
    print("|---|---:|---:|---:|")
    print(f"| backward NFE, mean over the run | {mean_s:.1f} | {mean_r:.1f} | {1 - mean_s / mean_r:.0%} |")
    print(f"| backward NFE, mean of the last {last} iterations | {end_s:.1f} | {end_r:.1f} | {1 - end_s / end_r:.0%} |")
    print(f"| forward NFE, mean over the run | {sum(semi['nfe_f']) / iters:.1f} | {sum(rms['nfe_f']) / iters:.1f} | |")
    print(f"| training time (s) | {semi['seconds']:.1f} | {rms['seconds']:.1f} | {1 - semi['seconds'] / rms['seconds']:.0%} |")

    func = runs["seminorm"][0]
    x = two_moons(BATCH, torch.Generator().manual_seed(123))
    print("\nOne gradient of the seminorm-trained model on a fresh batch, at several tolerances: backward NFE "
          "(quadrature: of which Gauss–Legendre nodes, 2 per accepted backward step), and which part sets the rms "
          "norm on the accepted and rejected steps of the rms backward solve:\n")
    print("| rtol | atol | Backsolve(seminorm) | Backsolve(rms) | seminorm / rms | Quadrature(stored) "
          "| Quadrature(resolve) | torchdiffeq default / seminorm | part setting the rms norm |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r, a in PROBE_TOLERANCES:
        nfe = {}
        for label, adjoint in (("semi", pyjode.Backsolve(norm="seminorm")), ("rms", pyjode.Backsolve(norm="rms")),
                               ("stored", pyjode.Quadrature(state="stored")),
                               ("resolve", pyjode.Quadrature(state="resolve"))):
            st = gradient_stats(func, x, adjoint, r, a)
            nfe[label] = f"{st.nfe_backward}" + (f" ({2 * st.steps_backward})" if label in ("stored", "resolve") else "")
            if label in ("semi", "rms"):
                nfe[label + "_n"] = st.nfe_backward
        td = (torchdiffeq_backward_nfe(func, x, r, a), torchdiffeq_backward_nfe(func, x, r, a, dict(norm="seminorm")))
        counts = norm_components(func, x, r, a)
        total = sum(counts.values())
        top = ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
        print(f"| {r:g} | {a:g} | {nfe['semi']} | {nfe['rms']} | {nfe['semi_n'] / nfe['rms_n']:.2f} | {nfe['stored']} "
              f"| {nfe['resolve']} | {td[0]} / {td[1]} | {top} |")

if __name__ == "__main__":
    main()
