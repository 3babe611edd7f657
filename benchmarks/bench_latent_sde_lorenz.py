"""torchsde's latent SDE example (examples/latent_sde_lorenz.py) against pyjode.torchsde, with only its import
changed.

The example's source is read from a checkout of google-research/torchsde (it is not part of this project) and
loaded twice: as written, and with ``import torchsde`` replaced by ``import pyjode.torchsde as torchsde``. One
data set (the example's stochastic Lorenz data, sampled by the peer) feeds both. Each variant builds the model from
the same seed and runs the example's training step (forward with ``sdeint(..., dt=1e-2, logqp=True,
method="euler")``, the loss with KL annealing, backward, Adam, both schedulers). Blocks of iterations alternate
between the variants; the figure is the median time per iteration, and the ratio is pyjode / torchsde. The loss
curves are compared window by window (the variants draw different Brownian paths, so they agree within the
iteration-to-iteration noise, not exactly).

    python -m benchmarks.bench_latent_sde_lorenz --example PATH/torchsde/examples/latent_sde_lorenz.py \
        [--batch 256] [--blocks 8] [--block-iters 5] [--curve-iters 200] [--threads 1] [--adjoint]

Loss curves over several seeds (no timing): ``--seeds 3 --seed-iters 30``. Seed s gives both libraries the same
initial weights and, at every iteration, the same normals for the example's initial latent state (torch's global
generator is reseeded before each step); each library then draws its own Brownian path. The table gives, per
window of iterations, each library's mean over seeds with the seed-to-seed spread (sample standard deviation of
the seeds' window means), and the paired difference pyjode − torchsde (same seed) as mean ± standard error.
``--shared-bm`` instead hands both libraries one torchsde ``BrownianInterval`` per step (same entropy), which
removes the noise: the curves then differ only by floating-point rounding if the discretisations are the same.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import types

import torch


def floor_sdeint(sde, y0, ts, dt=1e-3, logqp=False, method="euler", **unused):
    """The least any library can do for the example's training call: a bare Euler–Maruyama loop on torchsde's
    grid with the KL accumulated beside the state (no augmented channel), one randn per step, linear
    interpolation at the outputs. Used only to measure the floor that the example's own networks set."""
    assert logqp and method == "euler"
    x, kl, t = y0, y0.new_zeros(y0.shape[0]), ts[0]
    xs, kls = [x], [kl]
    for out in ts[1:]:
        while t < out:
            t_next = torch.clamp(t + dt, max=ts[-1])
            h = float(t_next - t)
            f, g, prior = sde.f(t, x), sde.g(t, x), sde.h(t, x)
            u = (f - prior) / g
            x_next = x + f * h + g * (torch.randn_like(x) * h ** 0.5)
            kl_next = kl + (0.5 * h) * (u * u).sum(dim=1)
            x_prev, kl_prev, t_prev, x, kl, t = x, kl, t, x_next, kl_next, t_next
        w = float((out - t_prev) / (t - t_prev))
        xs.append((1 - w) * x_prev + w * x)
        kls.append((1 - w) * kl_prev + w * kl)
    kls = torch.stack(kls)
    return torch.stack(xs), kls[1:] - kls[:-1]


def load(path: str, variant: str) -> types.ModuleType:
    """The example with `import torchsde` bound to the peer, to pyjode.torchsde or to the floor loop."""
    source = open(path).read()
    if "\nimport torchsde\n" not in source:
        raise SystemExit("the example no longer has the line 'import torchsde'")
    if variant == "pyjode":
        source = source.replace("\nimport torchsde\n", "\nimport pyjode.torchsde as torchsde\n", 1)
    elif variant == "floor":
        floor = types.ModuleType("_latent_floor")
        floor.sdeint = floor_sdeint
        sys.modules["_latent_floor"] = floor
        source = source.replace("\nimport torchsde\n", "\nimport _latent_floor as torchsde\n", 1)
    module = types.ModuleType("latent_sde_lorenz_" + variant)
    module.__file__ = path
    exec(compile(source, path, "exec"), module.__dict__)
    return module


class Trainer:
    """The example's training loop body, for one module variant."""

    def __init__(self, module, xs, ts, seed: int, adjoint: bool, noise_std: float = 0.01):
        torch.manual_seed(seed)
        self.m, self.xs, self.ts, self.adjoint, self.noise_std = module, xs, ts, adjoint, noise_std
        self.model = module.LatentSDE(data_size=3, latent_size=4, context_size=64, hidden_size=128)
        self.opt = torch.optim.Adam(params=self.model.parameters(), lr=1e-2)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(optimizer=self.opt, gamma=0.997)
        self.kl = module.LinearScheduler(iters=1000)
        self.losses, self.log_pxs, self.log_ratios = [], [], []
        self.gen = torch.Generator().manual_seed(seed + 1)

    def step(self):
        self.model.zero_grad()
        log_pxs, log_ratio = self.model(self.xs, self.ts, self.noise_std, self.adjoint, "euler")
        loss = -log_pxs + log_ratio * self.kl.val
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.kl.step()
        self.losses.append(float(loss.detach()))
        self.log_pxs.append(float(log_pxs.detach()))
        self.log_ratios.append(float(log_ratio.detach()))


class SharedNoise:
    """Stands in for the module's `torchsde`: every sdeint call gets a torchsde BrownianInterval of the entropy set
    before the step, so two libraries integrate on the same Brownian path."""

    def __init__(self, lib, peer_lib) -> None:
        self.lib, self.peer_lib, self.entropy = lib, peer_lib, 0

    def __getattr__(self, name):
        return getattr(self.lib, name)

    def sdeint(self, sde, y0, ts, **kwargs):
        bm = self.peer_lib.BrownianInterval(t0=float(ts[0]), t1=float(ts[-1]), size=(y0.shape[0], y0.shape[1] + 1), dtype=y0.dtype,
                                            device=y0.device, entropy=self.entropy)
        return self.lib.sdeint(sde, y0, ts, bm=bm, **kwargs)


def _stats(values):
    mean = statistics.mean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else float("nan"))


def curves(args, peer, ours, xs, ts) -> None:
    """Loss curves of both libraries over `args.seeds` seeds (see the module docstring)."""
    import numpy as np
    import torchsde as peer_lib
    if args.shared_bm:
        for module in (peer, ours):
            module.torchsde = SharedNoise(module.torchsde, peer_lib)
    names = ("torchsde", "pyjode")
    runs = {name: [] for name in names}
    for seed in range(args.seeds):
        trainers = {"torchsde": Trainer(peer, xs, ts, seed, False), "pyjode": Trainer(ours, xs, ts, seed, False)}
        for it in range(args.seed_iters):
            for k, name in enumerate(names):
                # same normals for the initial latent state in both libraries; each its own Brownian path (torchsde
                # draws its entropy from numpy, pyjode from torch after the latent draw)
                torch.manual_seed(1_000_003 * (seed + 1) + it)
                np.random.seed((7919 * (seed + 1) + 104_729 * it + k) % (2 ** 32))
                if args.shared_bm:
                    for module in (peer, ours):
                        module.torchsde.entropy = 65_537 * (seed + 1) + it
                trainers[name].step()
            print(f"  seed {seed} iteration {it + 1}: loss torchsde {trainers['torchsde'].losses[-1]:.6g}, "
                  f"pyjode {trainers['pyjode'].losses[-1]:.6g}", flush=True)
        for name in names:
            runs[name].append(trainers[name])
    window = args.window
    print(f"batch {args.batch}, dt 1e-2, method euler, logqp, sdeint, {args.seeds} seeds x {args.seed_iters} "
          f"iterations, {'shared Brownian interval' if args.shared_bm else 'each library its own Brownian noise'}")
    for field, label in (("losses", "loss"), ("log_pxs", "-log p(x)"), ("log_ratios", "KL (log_ratio)")):
        sign = -1.0 if field == "log_pxs" else 1.0
        print(f"{label}: window | torchsde mean (seed sd) | pyjode mean (seed sd) | pyjode - torchsde, paired: "
              f"mean +- s.e. | in units of seed sd")
        for i in range(0, args.seed_iters, window):
            j = min(i + window, args.seed_iters)
            per_seed = {name: [sign * statistics.mean(getattr(tr, field)[i:j]) for tr in runs[name]]
                        for name in names}
            (ma, sa), (mb, sb) = _stats(per_seed["torchsde"]), _stats(per_seed["pyjode"])
            diffs = [b - a for a, b in zip(per_seed["torchsde"], per_seed["pyjode"])]
            md, sd = _stats(diffs)
            se = sd / math.sqrt(len(diffs))
            spread = math.sqrt(0.5 * (sa * sa + sb * sb))
            print(f"  {i + 1:3d}-{j:3d} | {ma:.4g} ({sa:.2g}) | {mb:.4g} ({sb:.2g}) | {md:+.3g} +- {se:.2g} "
                  f"({md / ma * 100:+.2f}%) | {md / spread:+.2f}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", required=True)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--block-iters", type=int, default=5)
    parser.add_argument("--curve-iters", type=int, default=0, help="extra untimed iterations for the loss curves")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--adjoint", action="store_true")
    parser.add_argument("--seeds", type=int, default=0, help="loss curves over this many seeds instead of timing")
    parser.add_argument("--seed-iters", type=int, default=30)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--shared-bm", action="store_true", help="with --seeds: one Brownian path for both")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in ("fire",):  # the example imports fire for its command line only
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                sys.modules[name] = types.ModuleType(name)
    peer, ours, floor = load(args.example, "torchsde"), load(args.example, "pyjode"), load(args.example, "floor")
    torch.manual_seed(0)
    import numpy as np
    np.random.seed(0)  # the data's Brownian path: torchsde draws its entropy from numpy
    y0 = torch.randn(args.batch, 3)
    ts = torch.linspace(0.0, 2.0, steps=100)
    xs = peer.StochasticLorenz().sample(y0, ts, 0.01, normalize=True)
    if args.seeds:
        curves(args, peer, ours, xs, ts)
        return
    trainers = {"torchsde": Trainer(peer, xs, ts, 0, args.adjoint), "pyjode": Trainer(ours, xs, ts, 0, args.adjoint)}
    if not args.adjoint:
        trainers["floor"] = Trainer(floor, xs, ts, 0, False)
    for t in trainers.values():
        t.step()  # warm-up
    per_iter = {name: [] for name in trainers}
    for b in range(args.blocks):
        names = list(trainers)
        order = names[b % len(names):] + names[:b % len(names)]
        for name in order:
            start = time.perf_counter()
            for _ in range(args.block_iters):
                trainers[name].step()
            per_iter[name].append((time.perf_counter() - start) / args.block_iters)
            print(f"  block {b} {name}: {per_iter[name][-1] * 1e3:.1f} ms per iteration", flush=True)
    med = {name: statistics.median(v) for name, v in per_iter.items()}
    for _ in range(args.curve_iters):
        for t in trainers.values():
            t.step()
    print(f"batch {args.batch}, dt 1e-2, method euler, logqp, {'sdeint_adjoint' if args.adjoint else 'sdeint'}, "
          f"threads {args.threads}")
    print(f"time per iteration: torchsde {med['torchsde'] * 1e3:.1f} ms, pyjode {med['pyjode'] * 1e3:.1f} ms, "
          f"ratio {med['pyjode'] / med['torchsde']:.3f}")
    if "floor" in med:
        print(f"floor (bare Euler loop) {med['floor'] * 1e3:.1f} ms, floor / torchsde {med['floor'] / med['torchsde']:.3f}")
    a, b = trainers["torchsde"].losses, trainers["pyjode"].losses
    window = max(1, len(a) // 8)
    print("loss curve (window means)  iterations  torchsde  pyjode")
    for i in range(0, len(a), window):
        print(f"  {i + 1:4d}-{min(i + window, len(a)):4d}  {statistics.mean(a[i:i + window]):10.2f}  "
              f"{statistics.mean(b[i:i + window]):10.2f}")


if __name__ == "__main__":
    main()
