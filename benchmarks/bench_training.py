"""Training workloads: every gradient method against torchdiffeq's direct backprop and adjoints.

Workloads (float32, one intra-op thread):

* ``cnf_trained``: FFJORD-style continuous normalising flow on 8 Gaussians. Field [z, t] -> 64 -> 64 -> 64
  -> 2 (softplus) on s = [z, Δlogp], the divergence by Hutchinson's estimator e^T (∂g/∂z) e with one
  Gaussian probe e per sample and iteration (``torch.autograd.grad`` inside the field, as in FFJORD).
  Data x at t = 1 is solved to t = 0, loss = mean negative log-likelihood. Batch 512, dopri5 at
  rtol = atol = 1e-5. Gradients are taken from weights trained first (``--pretrain`` iterations, pyjode
  direct, Adam lr 1e-3), where the flow is no longer near the identity.
* ``cnf_checkerboard``: the same CNF on the checkerboard from its initial weights.
* ``latent_ode``: torchdiffeq's latent ODE example on 1000 noisy spirals (100 observed times each): RNN
  encoder (25 hidden), latent field 4 -> 20 -> 20 -> 4 (ELU), decoder 4 -> 20 -> 2; ELBO loss; all 1000
  spirals per iteration; dopri5 at rtol 1e-7, atol 1e-9 through 100 output times.
* ``wide_mlp_1m``: the field Linear(4, 1024) softplus Linear(1024, 1024) softplus Linear(1024, 4)
  (1.06 M parameters, weights scaled as in ``bench_adjoint_wide_mlp``), batch 32, t in [0, 2.5] with 5
  outputs, MSE to a fixed target; dopri5 at rtol 1e-4, atol 1e-5.
* ``wide_mlp_9m``: the same with widths 3000 (9.0 M parameters).

Methods: torchdiffeq ``odeint`` (direct backprop, the yardstick), ``odeint_adjoint`` and its seminorm;
pyjode ``direct``, ``checkpointed``, ``Quadrature()`` (state re-solved), ``Backsolve()`` (seminorm) and
``auto`` (the method it settles on, after its first solve and its timed tries, is reported).

Figures, per workload and method, all from the same weights and batch:

* time per gradient (forward + loss + backward): median of interleaved repeats;
* forward and backward NFE (torchdiffeq: calls of the field, counted; pyjode: ``Stats``);
* the gradient's relative L2 error against torchdiffeq's direct backprop (same tolerances);
* the peak memory of one gradient in a fresh process: the growth of the peak resident set (VmHWM) over
  the resident set after building the model and taking one evaluation's gradient, for the process's first
  gradient (which includes one-time costs such as modules loaded on first use) and its second, under
  ``MALLOC_MMAP_THRESHOLD_=65536``
  (large blocks are returned when freed, so the peak tracks live memory; see ``bench_adjoint_memory``);
* training: ``--iters`` Adam steps from the same initial weights with the same batches and probes; the
  final loss (mean of the last 5) and the largest relative gap of the loss curve to torchdiffeq direct.

    python -m benchmarks.bench_training [--quick] [--workloads a,b] [--methods m,n] [--repeats R] [--iters N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch
import torchdiffeq
from torch import nn

import pyjode

from ._timing import interleaved
from .bench_adjoint_memory import _current_rss_mb, _reset_peak
from .bench_adjoint_wide_mlp import WideMLP

WORKLOADS = ("cnf_trained", "cnf_checkerboard", "latent_ode", "wide_mlp_1m", "wide_mlp_9m")
METHODS = ("td direct", "td adjoint", "td adjoint seminorm", "pj direct", "pj checkpointed", "pj quadrature",
           "pj backsolve", "pj auto")
#: on request only (``--methods``): pyjode's quadrature adjoint with the integral-only step-size controller
#: (``PIController(beta=0)``, torchdiffeq's rule), to compare at torchdiffeq's forward step count
EXTRA = ("pj quadrature I-control", "pj direct I-control", "floor")
#: the methods trained for the loss curves (torchdiffeq's adjoints cost 3-12x more per iteration here)
TRAINED = ("td direct", "pj direct", "pj checkpointed", "pj quadrature", "pj backsolve")


# -- workloads ----------------------------------------------------------------------------------------


class HutchinsonCNF(nn.Module):
    """[z, Δlogp]' = [g(t, z), -e^T (∂g/∂z) e], with the probe ``e`` set before each solve."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus(),
                                 nn.Linear(hidden, hidden), nn.Softplus(), nn.Linear(hidden, 2))
        self.e = None

    def forward(self, t, s):
        z = s[:, :2]
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            g = self.net(torch.cat([z, t.expand(z.shape[0], 1)], 1))
            (vjp,) = torch.autograd.grad(g, z, self.e, create_graph=True)
        return torch.cat([g, -(vjp * self.e).sum(1, keepdim=True)], 1)


def eight_gaussians(n, gen):
    centers = torch.tensor([(math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)) for k in range(8)]) * 4
    idx = torch.randint(0, 8, (n,), generator=gen)
    return (centers[idx] + 0.5 * torch.randn(n, 2, generator=gen)) / 1.414


def checkerboard(n, gen):
    x1 = torch.rand(n, generator=gen) * 4 - 2
    x2 = torch.rand(n, generator=gen) - torch.randint(0, 2, (n,), generator=gen).float() * 2
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1) * 2


class CNFWorkload:
    rtol = atol = 1e-5
    lr = 1e-3

    def __init__(self, data, batch=512, seed=0):
        torch.manual_seed(seed)
        self.func = HutchinsonCNF()
        self.model = self.func
        self.data, self.batch = data, batch

    def draw(self, gen):
        return self.data(self.batch, gen), torch.randn(self.batch, 2, generator=gen)

    def loss(self, solve, batch):
        x, e = batch
        self.func.e = e
        s1 = torch.cat([x, torch.zeros(x.shape[0], 1)], 1)
        s0 = solve(self.func, s1, torch.tensor([1.0, 0.0]), self.rtol, self.atol)[-1]
        z0, dlogp = s0[:, :2], s0[:, 2]
        logp = -0.5 * (z0 * z0).sum(1) - math.log(2 * math.pi) - dlogp
        return -logp.mean()


class LatentODEFunc(nn.Module):
    def __init__(self, latent=4, hidden=20):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(latent, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, latent)

    def forward(self, t, x):
        return self.fc3(nn.functional.elu(self.fc2(nn.functional.elu(self.fc1(x)))))


class LatentODE(nn.Module):
    def __init__(self, latent=4, obs=2, rnn_hidden=25, dec_hidden=20):
        super().__init__()
        self.func = LatentODEFunc(latent)
        self.i2h, self.h2o = nn.Linear(obs + rnn_hidden, rnn_hidden), nn.Linear(rnn_hidden, 2 * latent)
        self.dec = nn.Sequential(nn.Linear(latent, dec_hidden), nn.ReLU(), nn.Linear(dec_hidden, obs))
        self.rnn_hidden, self.latent = rnn_hidden, latent


def spirals(nspiral=1000, ntotal=1000, nsample=100, start=0.0, stop=6 * math.pi, noise_std=0.3, a=0.0, b=0.3,
            seed=0):
    """torchdiffeq's latent-ODE example data: clockwise and counter-clockwise spirals, 100 consecutive
    noisy observations of each from a random start."""
    gen = torch.Generator().manual_seed(seed)
    orig_ts = torch.linspace(start, stop, ntotal)
    zs_cw = stop + 1.0 - orig_ts
    rs_cw = a + b * 50.0 / zs_cw
    cw = torch.stack([rs_cw * torch.cos(zs_cw) - 5.0, rs_cw * torch.sin(zs_cw)], 1)
    zs_cc = orig_ts
    rw_cc = a + b * zs_cc
    cc = torch.flip(torch.stack([rw_cc * torch.cos(zs_cc) + 5.0, rw_cc * torch.sin(zs_cc)], 1), [0])
    samples = []
    for _ in range(nspiral):
        t0 = int(torch.randint(0, ntotal - 2 * nsample, (1,), generator=gen)) + nsample
        traj = cc if bool(torch.rand(1, generator=gen) > 0.5) else cw
        samples.append(traj[t0:t0 + nsample] + noise_std * torch.randn(nsample, 2, generator=gen))
    return torch.stack(samples), orig_ts[:nsample]


class LatentWorkload:
    rtol, atol, lr, noise_std = 1e-7, 1e-9, 1e-2, 0.3

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.model = LatentODE()
        self.func = self.model.func
        self.x, self.ts = spirals()

    def draw(self, gen):
        return torch.randn(self.x.shape[0], self.model.latent, generator=gen)

    def loss(self, solve, eps):
        m, x = self.model, self.x
        h = torch.zeros(x.shape[0], m.rnn_hidden)
        for k in reversed(range(x.shape[1])):
            h = torch.tanh(m.i2h(torch.cat([x[:, k], h], 1)))
        out = m.h2o(h)
        mean, logvar = out[:, :m.latent], out[:, m.latent:]
        z0 = eps * torch.exp(0.5 * logvar) + mean
        zs = solve(self.func, z0, self.ts, self.rtol, self.atol).permute(1, 0, 2)
        pred = m.dec(zs)
        logvar_noise = 2 * math.log(self.noise_std)
        logpx = -0.5 * (math.log(2 * math.pi) + logvar_noise + (x - pred) ** 2 / math.exp(logvar_noise))
        kl = 0.5 * (mean ** 2 + torch.exp(logvar) - logvar - 1)  # against N(0, I)
        return (-logpx.sum((1, 2)) + kl.sum(1)).mean()


class WideWorkload:
    rtol, atol, lr = 1e-4, 1e-5, 1e-4

    def __init__(self, width, seed=0):
        torch.manual_seed(seed)
        self.func = WideMLP(4, width, width)
        self.model = self.func
        self.y0 = torch.randn(32, 4)
        self.t = torch.linspace(0.0, 2.5, 5)
        self.target = 5 * torch.randn(5, 32, 4)

    def draw(self, gen):
        return None

    def loss(self, solve, _):
        return torch.mean((solve(self.func, self.y0, self.t, self.rtol, self.atol) - self.target) ** 2)


def make_workload(name: str):
    if name == "cnf_trained":
        return CNFWorkload(eight_gaussians)
    if name == "cnf_checkerboard":
        return CNFWorkload(checkerboard)
    if name == "latent_ode":
        return LatentWorkload()
    if name == "wide_mlp_1m":
        return WideWorkload(1024)
    if name == "wide_mlp_9m":
        return WideWorkload(3000)
    raise ValueError(f"unknown workload {name!r}; choose from {WORKLOADS}")


# -- methods ------------------------------------------------------------------------------------------


class Counted(nn.Module):
    """Counts a torchdiffeq solve's field calls (forward and backward)."""

    def __init__(self, func):
        super().__init__()
        self.func, self.calls = func, 0

    def forward(self, t, y):
        self.calls += 1
        return self.func(t, y)


class Method:
    """One gradient method as ``solve(func, y0, t, rtol, atol) -> ys``, with its NFE and auto's choice."""

    def __init__(self, name: str):
        self.name, self.stats, self.counted, self.auto = name, None, None, None
        if name == "pj auto":
            self.auto = pyjode.Auto()
        elif name.startswith("pj auto@"):  # "pj auto@BYTES": a set memory budget
            self.auto = pyjode.Auto(memory_budget=int(name.split("@")[1]))

    def __call__(self, func, y0, t, rtol, atol):
        kw = dict(method="dopri5", rtol=rtol, atol=atol)
        if self.name.startswith("td"):
            self.counted = Counted(func)
            if self.name == "td direct":
                return torchdiffeq.odeint(self.counted, y0, t, **kw)
            options = dict(norm="seminorm") if self.name.endswith("seminorm") else None
            return torchdiffeq.odeint_adjoint(self.counted, y0, t, adjoint_params=tuple(func.parameters()),
                                              adjoint_options=options, **kw)
        if self.name == "floor":
            self.stats = pyjode.Stats()
            return _floor_solve(func, y0, t, rtol, atol)
        if self.name.endswith(" I-control"):
            kw["controller"] = pyjode.PIController(beta=0.0)
        adjoint = self.auto or {"pj direct": "direct", "pj checkpointed": "checkpointed",
                                "pj quadrature": pyjode.Quadrature(),
                                "pj backsolve": pyjode.Backsolve()}[self.name.replace(" I-control", "")]
        self.stats = pyjode.Stats()
        return pyjode.odeint(func, y0, t, adjoint=adjoint, stats=self.stats, **kw)

    def gradient(self, work, batch):
        """One gradient into the parameters' ``.grad``; returns (loss, nfe forward, nfe backward)."""
        work.model.zero_grad(set_to_none=True)
        loss = work.loss(self, batch)
        nfe_f = self.counted.calls if self.name.startswith("td") else None
        loss.backward()
        if self.name.startswith("td"):
            return loss.item(), nfe_f, self.counted.calls - nfe_f
        return loss.item(), self.stats.nfe_forward, self.stats.nfe_backward

    @property
    def choice(self) -> str:
        return self.stats.adjoint if self.auto is not None and self.stats is not None else ""


class _NoSolveMemory(torch.autograd.Function):
    """The memory floor of every ODE gradient method: outputs solved without a graph, re-attached so that
    the rest of the model (encoder, decoder, loss) is backpropagated as usual, and a backward pass that
    does no ODE work at all: dL/dy0 = dL/dy(t0) (the identity part only) and a zero, parameter-sized
    gradient for each field parameter (the buffers that become ``.grad``, which every method fills).
    Not a gradient of the solve: for memory probes only."""

    @staticmethod
    def forward(ctx, ys, y0, *params):
        ctx.param_shapes = [p.shape for p in params]
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        return (None, grad_ys[0], *[torch.zeros(shape, dtype=grad_ys.dtype) for shape in ctx.param_shapes])


def _floor_solve(func, y0, t, rtol, atol):
    with torch.no_grad():
        ys = pyjode.odeint(func, y0, t, method="dopri5", rtol=rtol, atol=atol)
    return _NoSolveMemory.apply(ys, y0, *func.parameters())


def settle(m: "Method", work, batch, most: int = 30) -> int:
    """Gradients with auto until it has made its choice: the first solve that counts the steps, then its
    timed tries of the close contenders (as the first iterations of a training run). Returns how many."""
    for n in range(1, most + 1):
        m.gradient(work, batch)
        if n > 1 and not m.auto.measuring:
            return n
    raise RuntimeError(f"auto still measuring after {most} gradients")


def flat_grad(model) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])


# -- measurements -------------------------------------------------------------------------------------


def pretrain(work, iters: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(work.model.parameters(), lr=work.lr)
    method = Method("pj direct")
    for _ in range(iters):
        method.gradient(work, work.draw(gen))
        opt.step()


def probe(workload: str, method: str, weights: str) -> dict:
    """One gradient in this fresh process: peak resident-set growth in MiB."""
    torch.set_num_threads(1)
    work = make_workload(workload)
    if weights:
        work.model.load_state_dict(torch.load(weights))
    batch = work.draw(torch.Generator().manual_seed(123))
    m = Method(method)
    if m.auto is not None:  # auto decides from the previous solves of the field: give it those of training
        settle(m, work, batch)
    # kernels, the thread pool and the autograd engine loaded before the baseline: one evaluation of the
    # field with its backward pass
    work.func(torch.tensor(0.0), _field_input(work, batch)).sum().backward()
    work.model.zero_grad(set_to_none=True)
    torch.func.vmap(torch.sin)(torch.zeros(2))  # the batching machinery's modules, loaded on first use
    peaks = []
    for _ in range(2):  # the first gradient of the process, and the next (what a training loop sees)
        work.model.zero_grad(set_to_none=True)
        _reset_peak()
        base = _current_rss_mb()
        m.gradient(work, batch)
        peaks.append(_peak_rss_mb() - base)
    return dict(peak_mb=peaks[0], peak2_mb=peaks[1], choice=m.choice)


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), which ``_reset_peak`` resets. Not ``ru_maxrss``: across
    ``exec`` the kernel carries the parent's resident set over into it, so a child of a large process
    would report the parent's size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _field_input(work, batch):
    if isinstance(work, CNFWorkload):
        work.func.e = batch[1]
        return torch.cat([batch[0], torch.zeros(batch[0].shape[0], 1)], 1)
    if isinstance(work, LatentWorkload):
        return torch.zeros(work.x.shape[0], work.model.latent)
    return work.y0


def run_probe(workload: str, method: str, weights: str) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_training", "--probe", workload, method, weights],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return dict(peak_mb=float("nan"), choice="", error=out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_curve(work_name: str, method: str, iters: int, weights: str):
    work = make_workload(work_name)
    if weights:
        work.model.load_state_dict(torch.load(weights))
    gen = torch.Generator().manual_seed(7)
    opt = torch.optim.Adam(work.model.parameters(), lr=work.lr)
    m, losses = Method(method), []
    for _ in range(iters):
        losses.append(m.gradient(work, work.draw(gen))[0])
        opt.step()
    return losses


def bench(name: str, args, tmp: str) -> None:
    work = make_workload(name)
    weights = ""
    if name == "cnf_trained":
        t0 = time.perf_counter()
        pretrain(work, args.pretrain)
        print(f"(pretrained {args.pretrain} iterations in {time.perf_counter() - t0:.0f} s)", flush=True)
    if name == "cnf_trained" or args.iters:
        weights = os.path.join(tmp, f"{name}.pt")
        torch.save(work.model.state_dict(), weights)
    batch = work.draw(torch.Generator().manual_seed(123))
    methods = {n: Method(n) for n in args.methods}
    info = {}
    ref = None
    for n, m in methods.items():  # untimed warm-up; auto's first solve teaches it the steps
        loss, nf, nb = m.gradient(work, batch)
        g = flat_grad(work.model)
        ref = g if n == "td direct" else ref
        info[n] = dict(loss=loss, nfe_f=nf, nfe_b=nb, err=float((g - ref).norm() / ref.norm()))
    # auto's choice once it knows the steps; and auto with a budget of 0.3x its estimate of direct's memory
    tight = None
    if "pj auto" in methods:
        settle(methods["pj auto"], work, batch)
        budget = int(0.3 * methods["pj auto"].auto.estimates["direct"])
        tight = f"pj auto@{budget}"
        methods[tight] = Method(tight)
        settle(methods[tight], work, batch)
    for n in ("pj auto", tight) if tight else ():
        loss, nf, nb = methods[n].gradient(work, batch)
        g = flat_grad(work.model)
        info[n] = dict(loss=loss, nfe_f=nf, nfe_b=nb, err=float((g - ref).norm() / ref.norm()),
                       choice=methods[n].choice)
    times = interleaved({n: (lambda m=m: m.gradient(work, batch)) for n, m in methods.items()},
                        repeats=args.repeats, warmup=0)
    nan = dict(peak_mb=float("nan"), peak2_mb=float("nan"))
    mem = {n: (nan if args.no_memory else run_probe(name, n, weights)) for n in methods}
    # auto's curve includes its first solve and timed tries, during which it changes method
    curves = {n: train_curve(name, n, args.iters, weights) for n in methods
              if n in TRAINED or n == tight} if args.iters else {}

    td = times["td direct"]
    print(f"\n### {name} ({sum(p.numel() for p in work.func.parameters()) / 1e6:.3f} M field parameters)\n")
    print("| method | s / gradient | × td direct | NFE fwd | NFE bwd | peak MiB (1st / 2nd gradient) "
          "| × td direct memory (1st / 2nd) | grad rel. err vs td direct |"
          + (f" final loss ({args.iters} it) | max curve gap |" if curves else ""))
    print("|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if curves else ""))
    for n in methods:
        i = info[n]
        label = (n if n != tight else "pj auto, budget 0.3x its direct estimate") + (
            f" → {i['choice']}" if i.get("choice") else "")
        m1, m2 = mem[n]["peak_mb"], mem[n].get("peak2_mb", float("nan"))
        t1, t2 = mem["td direct"]["peak_mb"], mem["td direct"].get("peak2_mb", float("nan"))
        row = (f"| {label} | {times[n]:.3f} | {times[n] / td:.2f} | {i['nfe_f']} | {i['nfe_b']} "
               f"| {m1:.1f} / {m2:.1f} | "
               f"{m1 / t1:.2f} / {m2 / t2:.2f} | {i['err']:.1e} |")
        if curves and n in curves:
            c, r = curves[n], curves["td direct"]
            gap = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(c, r))
            row += f" {sum(c[-5:]) / len(c[-5:]):.4f} | {gap:.1e} |"
        elif curves:
            row += " - | - |"
        print(row, flush=True)
    if tight:
        print(f"\n(in the fresh-process memory probes auto chose {mem['pj auto'].get('choice')} and, with the "
              f"{budget / 2**20:.1f} MiB budget, {mem[tight].get('choice')})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, 20 pretraining iterations, no training")
    parser.add_argument("--workloads", default=",".join(WORKLOADS[:4]))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None, help="training iterations per method (0: none)")
    parser.add_argument("--pretrain", type=int, default=None)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated subset of the methods ('td direct' is always run, 'pj auto' unless "
                             "--no-auto)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory probes")
    parser.add_argument("--no-auto", action="store_true", help="leave out the 'pj auto' rows (run unless this is given)")
    parser.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(*args.probe)))
        return
    torch.set_num_threads(1)
    chosen = args.methods.split(",")
    unknown = [m for m in chosen if m not in METHODS + EXTRA]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {list(METHODS + EXTRA)}")
    always = ("td direct",) if args.no_auto else ("td direct", "pj auto")
    args.methods = [m for m in METHODS + EXTRA if m in chosen or m in always]
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.iters = args.iters if args.iters is not None else (0 if args.quick else 30)
    args.pretrain = args.pretrain if args.pretrain is not None else (20 if args.quick else 150)
    version = getattr(torchdiffeq, "__version__", "?")
    print(f"torch {torch.__version__}, torchdiffeq {version}, "
          f"{platform.machine()}, 1 thread; median of {args.repeats} interleaved repeats; float32")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            bench(name, args, tmp)


if __name__ == "__main__":
    main()
