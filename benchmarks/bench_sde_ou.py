"""The OU experiment of Norcliffe & Deisenroth (2023): training a neural SDE through Wong–Zakai
against training it as an SDE with torchsde.

Every method trains the same neural SDE (pyjode.demo.sde: drift and diffusion MLPs of (t, x),
two hidden Softplus layers of width W) from the same initial weights on the same batches
(8 initial conditions x 32 paths) with Adam (lr 1e-2) for the same number of iterations. The
loss is the KL between the Gaussian fitted to each initial condition's paths and the exact OU
marginal, averaged over the 100 times after t = 0. Methods:
- Wong–Zakai ODE (K = 10 cosine terms by default, `--n-terms`; resampled per iteration), dopri5 rtol = atol = 1e-3, with
  pyjode's quadrature adjoint (the paper's method) and with direct backprop;
- torchsde.sdeint, reversible Heun, dt = 0.01, direct backprop (the paper's "sde_direct");
- torchsde.sdeint_adjoint, reversible Heun with adjoint_reversible_heun, dt = 0.01;
- pyjode.sdeint, reversible Heun, dt = 0.01, adjoint="reversible".
Quality is scored identically for all: the trained parameters go into pyjode.sdeint(method=
"reversible_heun", dt=0.01) on 20 held-out initial conditions x 100 paths, and the same KL is
computed against the exact process ("eval KL"; lower is better).

    python -m benchmarks.bench_sde_ou [--quick] [--iters N] [--widths 5 20] [--threads N] [--n-terms K] [--seeds S]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import pyjode
from pyjode.demo import sde as ou
from pyjode.sde import WongZakai, sdeint

GROUPS, PER_GROUP, LR, DT = 8, 32, 1e-2, 0.01
N_TERMS = 10  # cosine terms K of the Wong–Zakai noise (the paper's OU setting); --n-terms changes it


def _wong_zakai(adjoint):
    def make(sde):
        field = WongZakai(sde, t0=0.0, t1=ou.T_END, shape=(GROUPS * PER_GROUP, 1), n_terms=N_TERMS)
        t = ou.times().float()

        def paths(y0):
            field.resample()
            return pyjode.odeint(field, y0, t, adjoint=adjoint, **ou.SOLVER)
        return paths
    return make


def _torchsde(adjoint: bool):
    import torchsde

    def make(sde):
        t = ou.times()   # float64: torchsde's BrownianInterval is pathologically slow on float32

        def paths(y0):
            if adjoint:
                return torchsde.sdeint_adjoint(sde, y0, t, method="reversible_heun", dt=DT,
                                               adjoint_method="adjoint_reversible_heun")
            return torchsde.sdeint(sde, y0, t, method="reversible_heun", dt=DT)
        return paths
    return make


def _pyjode_sde(sde):
    t = ou.times()

    def paths(y0):
        return sdeint(sde, y0, t, method="reversible_heun", dt=DT, adjoint="reversible")
    return paths


METHODS = {
    "Wong–Zakai + quadrature (pyjode)": _wong_zakai("quadrature"),
    "Wong–Zakai + direct (pyjode)": _wong_zakai("direct"),
    "torchsde sdeint, direct": _torchsde(adjoint=False),
    "torchsde sdeint_adjoint, reversible Heun": _torchsde(adjoint=True),
    "pyjode sdeint, reversible adjoint": _pyjode_sde,
}


class Trainer:
    """One method's training run, advanced one iteration at a time."""

    def __init__(self, make, width: int, seed: int = 0):
        torch.manual_seed(seed)
        self.sde = ou.NeuralSDE(width)
        self.paths_of = make(self.sde)
        self.opt = torch.optim.Adam(self.sde.parameters(), lr=LR)
        self.gen = torch.Generator().manual_seed(seed)
        self.seconds, self.losses = [], []

    def step(self) -> None:
        x0 = ou.sample_initial(GROUPS, self.gen)
        start = time.perf_counter()
        self.opt.zero_grad()
        loss = ou.loss_of_paths(self.paths_of(ou.expand(x0, PER_GROUP)), x0, PER_GROUP)
        loss.backward()
        self.opt.step()
        self.seconds.append(time.perf_counter() - start)
        self.losses.append(loss.item())


def train_interleaved(width: int, n_iter: int, seed: int = 0) -> dict[str, Trainer]:
    """All methods advance in lockstep, in a rotating order, so machine noise hits them alike."""
    trainers = {name: Trainer(make, width, seed) for name, make in METHODS.items()}
    names = list(trainers)
    for i in range(n_iter):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            trainers[name].step()
    return trainers


def main(argv=None) -> None:
    global N_TERMS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--widths", type=int, nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-terms", type=int, default=N_TERMS, help="cosine terms K of the Wong–Zakai noise")
    parser.add_argument("--seeds", type=int, default=1,
                        help="independent runs (initial weights and batches) per width; with more than one, "
                             "KLs are reported as mean ± standard deviation over the runs")
    args = parser.parse_args(argv)
    N_TERMS = args.n_terms
    torch.set_num_threads(args.threads)
    n_iter = args.iters or (10 if args.quick else 100)
    widths = args.widths or ([20] if args.quick else [5, 20, 50])
    print(f"torch {torch.__version__}, threads {args.threads}, {n_iter} iterations, "
          f"batch {GROUPS} x {PER_GROUP} paths, lr {LR}, Wong–Zakai K = {N_TERMS}")
    print("| width | method | time/iter (s) | ratio to WZ+quadrature | train KL (last 10) "
          "| eval KL |")
    print("|---|---|---|---|---|---|")
    for width in widths:
        seconds, train_kl, eval_kl = {}, {}, {}
        for seed in range(args.seeds):
            for name, tr in train_interleaved(width, n_iter, seed).items():
                seconds.setdefault(name, []).extend(tr.seconds)
                tail = tr.losses[-10:]
                train_kl.setdefault(name, []).append(sum(tail) / len(tail))
                eval_kl.setdefault(name, []).append(ou.evaluate(tr.sde))
        base = statistics.median(next(iter(seconds.values())))
        for name in seconds:
            per_iter = statistics.median(seconds[name])
            print(f"| {width} | {name} | {per_iter:.3f} | {per_iter / base:.2f} | "
                  f"{_spread(train_kl[name])} | {_spread(eval_kl[name])} |", flush=True)


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


if __name__ == "__main__":
    main()
