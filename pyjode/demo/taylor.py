"""Demo: a Taylor–Lagrange neural ODE classifier on the bundled 8x8 digits, against a dopri5 neural ODE.

The set-up follows the paper's image classifier at digits scale: the pixels are the state, the field is
``sigmoid(y)‖t -> hidden -> sigmoid‖t -> 64``, the head is ``sigmoid -> Linear(64, 10)``; the Taylor–Lagrange
integrator takes 2 steps of order 1 over [0, 1]. Both models start from the same weights and train with
Adam on the same batches, epoch by epoch in turn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data import digits_split
from ..neural_ode import NeuralODE
from ..taylor_lagrange import MidpointNet, TaylorLagrange, train_alternating
from .figures import pyplot, save

DIM, CLASSES = 64, 10


class DigitsField(nn.Module):
    """``sigmoid(y)‖t -> hidden -> sigmoid‖t -> dim``: the paper's MNIST dynamics at a smaller size."""

    def __init__(self, dim: int = DIM, hidden: int = 64):
        super().__init__()
        self.l1 = nn.Linear(dim + 1, hidden)
        self.l2 = nn.Linear(hidden + 1, dim)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tcol = t.expand(*y.shape[:-1], 1)
        h = torch.sigmoid(self.l1(torch.cat([torch.sigmoid(y), tcol], dim=-1)))
        return self.l2(torch.cat([h, tcol], dim=-1))


class EndState(nn.Module):
    """A NeuralODE over [0, 1] that returns only the final state."""

    def __init__(self, node: NeuralODE):
        super().__init__()
        self.node = node

    def forward(self, y0: torch.Tensor) -> torch.Tensor:
        return self.node(y0)[-1]


class Classifier(nn.Module):
    def __init__(self, integrator: nn.Module, dim: int = DIM):
        super().__init__()
        self.integrator = integrator
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fixed pre-net: pixels in [0, 1] centred and spread over the sigmoid's responsive range
        return self.head(torch.sigmoid(self.integrator(4.0 * (x - 0.5))))


@dataclass
class Config:
    epochs: int = 30
    batch: int = 128
    lr: float = 1e-2
    hidden: int = 64
    order: int = 1
    steps: int = 2
    remainder_weight: float = 10.0
    midpoint_iters: int = 10  # Adam steps per midpoint fit
    midpoint_every: int = 120  # batches between fits, the first fit after batch 0 (the paper: 400 on MNIST)
    midpoint_lr: float = 1e-2
    fit_tol: float = 1.4e-8  # the paper's dopri5 tolerance for the midpoint target
    dtype: torch.dtype = torch.float64  # tolerances near 1e-8 need float64
    seed: int = 0


def build_taylor(cfg: Config) -> tuple[Classifier, TaylorLagrange]:
    torch.manual_seed(cfg.seed + 1)
    midpoint = MidpointNet(DIM)
    torch.manual_seed(cfg.seed)  # the field and head then start as build_node's do
    tl = TaylorLagrange(DigitsField(hidden=cfg.hidden), order=cfg.order, steps=cfg.steps, midpoint=midpoint)
    return Classifier(tl).to(cfg.dtype), tl


def build_node(cfg: Config, rtol: float, atol: float, adjoint: str) -> Classifier:
    torch.manual_seed(cfg.seed)
    field = DigitsField(hidden=cfg.hidden)
    node = NeuralODE(field, t=[0.0, 1.0], method="dopri5", rtol=rtol, atol=atol, adjoint=adjoint)
    return Classifier(EndState(node)).to(cfg.dtype)


def batches(x: torch.Tensor, y: torch.Tensor, size: int, epoch: int, seed: int):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    return [(x[idx], y[idx]) for idx in order.split(size)]


def _adam(params: list, lr: float) -> torch.optim.Adam:
    # every model here uses the fused Adam kernel: the per-tensor Python loop of the default CPU Adam
    # would cost the small models a noticeable share of their step
    return torch.optim.Adam(params, lr=lr, fused=True)


class TaylorTrainer:
    """The alternating scheme, one call per epoch: a dynamics step per batch, and after batches 0,
    ``midpoint_every``, 2 ``midpoint_every``, ... (counted across epochs) a midpoint fit on that batch."""

    def __init__(self, model: Classifier, tl: TaylorLagrange, cfg: Config):
        self.model, self.tl, self.cfg = model, tl, cfg
        mid = {id(p) for p in tl.midpoint.parameters()}
        self.opt = _adam([p for p in model.parameters() if id(p) not in mid], cfg.lr)
        self.mid_opt = _adam(list(tl.midpoint.parameters()), cfg.midpoint_lr)
        self.batches_done = 0

    def epoch(self, data) -> list[float]:
        c = self.cfg
        # cut the epoch where fits are due, so that each fit is the first batch of a train_alternating run
        first = -self.batches_done % c.midpoint_every
        cuts = [0, *range(first, len(data), c.midpoint_every), len(data)]
        losses = []
        for lo, hi in zip(cuts, cuts[1:]):
            if hi > lo:
                fit = (self.batches_done + lo) % c.midpoint_every == 0
                losses += train_alternating(
                    self.model, self.tl, data[lo:hi], nn.functional.cross_entropy, self.opt,
                    remainder_weight=c.remainder_weight, midpoint_every=c.midpoint_every,
                    midpoint_iters=c.midpoint_iters if fit else 0, midpoint_optimizer=self.mid_opt,
                    rtol=c.fit_tol, atol=c.fit_tol)
        self.batches_done += len(data)
        return losses


class PlainTrainer:
    def __init__(self, model: Classifier, cfg: Config):
        self.model = model
        self.opt = _adam(list(model.parameters()), cfg.lr)

    def epoch(self, data) -> list[float]:
        losses = []
        for x, y in data:
            loss = nn.functional.cross_entropy(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            losses.append(loss.item())
        return losses


@torch.no_grad()
def accuracy(model: Callable, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(-1) == y).double().mean().item()


@dataclass
class Trained:
    seconds: float  # wall-clock training time
    cpu_seconds: float  # CPU time of this process over the same spans: robust to other jobs on the machine
    losses: list


def train_interleaved(trainers: dict, cfg: Config, x: torch.Tensor, y: torch.Tensor, progress=None) -> dict:
    """Train every model on the same batches, epoch by epoch in turn (rotating order); returns
    name -> :class:`Trained`."""
    wall = {name: 0.0 for name in trainers}
    cpu = {name: 0.0 for name in trainers}
    losses = {name: [] for name in trainers}
    epochs = range(cfg.epochs) if progress is None else progress(range(cfg.epochs))
    for e in epochs:
        data = batches(x, y, cfg.batch, e, cfg.seed)
        names = list(trainers)
        for name in names[e % len(names):] + names[: e % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            losses[name] += trainers[name].epoch(data)
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
    return {name: Trained(wall[name], cpu[name], losses[name]) for name in trainers}


def run(out_dir: Path, quick: bool) -> None:
    from tqdm import tqdm

    cfg = Config(epochs=6 if quick else 15)
    x_train, y_train, x_test, y_test = digits_split(dtype=cfg.dtype)
    tl_model, tl = build_taylor(cfg)
    node_model = build_node(cfg, rtol=1e-3, atol=1e-4, adjoint="quadrature")
    trainers = {"Taylor-Lagrange (order 1, 2 steps)": TaylorTrainer(tl_model, tl, cfg),
                "dopri5 NODE (rtol 1e-3, atol 1e-4, quadrature)": PlainTrainer(node_model, cfg)}
    results = train_interleaved(trainers, cfg, x_train, y_train, progress=lambda r: tqdm(r, desc="taylor demo"))
    models = dict(zip(trainers, (tl_model, node_model)))
    iters = cfg.epochs * len(batches(x_train, y_train, cfg.batch, 0, cfg.seed))
    rows = []
    for name, trained in results.items():
        secs = trained.seconds
        accuracy(models[name], x_test, y_test)  # warm-up: traces the field for the test-set shape
        start = time.perf_counter()
        acc = accuracy(models[name], x_test, y_test)
        rows.append((name, secs / iters, secs, acc, time.perf_counter() - start))
    print("| model | s/iter | train s | test acc | eval s |\n|---|---|---|---|---|")
    for name, per_iter, secs, acc, ev in rows:
        print(f"| {name} | {per_iter:.4f} | {secs:.1f} | {acc:.3f} | {ev:.4f} |")

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, trained in results.items():
        ax.plot(torch.linspace(0, trained.seconds, len(trained.losses)).tolist(), trained.losses, label=name)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax.set_title("8x8 digits: Taylor-Lagrange vs dopri5 neural ODE")
    ax.legend()
    save(fig, out_dir / "taylor.png", dpi=120)
