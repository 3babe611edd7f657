"""sdeint forward and gradient time against torchsde on the same neural SDE.

A diagonal-noise neural SDE (drift and diffusion MLPs of width W, state d, batch B) is solved on
[0, 1] with dt = 0.01 by each method; every library draws its own Brownian motion as a user
would, passing none (pyjode then draws the increments of its step grid, torchsde builds its default
BrownianInterval); the output times are float64 (see main). "floor ÷ torchsde" times the
networks alone (see _network_floor): no implementation of the method can beat that ratio. Times are medians of
interleaved repeats in one process; the ratio is pyjode / torchsde (< 1: pyjode faster).
"forward" runs under no_grad; "gradient" is forward + backward of a sum-of-squares loss:
direct backprop for both, and for reversible Heun also pyjode's adjoint="reversible" against
torchsde's sdeint_adjoint(adjoint_method="adjoint_reversible_heun").

    python -m benchmarks.bench_sde_solver [--quick] [--threads N] [--repeats R]
"""
from __future__ import annotations

import argparse
import platform

import torch
from torch import nn

import pyjode.sde as psde

from ._timing import interleaved

T_END, DT = 1.0, 0.01


class NeuralSDE(nn.Module):
    noise_type = "diagonal"

    def __init__(self, dim: int, width: int, sde_type: str):
        super().__init__()
        self.sde_type = sde_type
        self.drift = nn.Sequential(nn.Linear(dim, width), nn.Tanh(), nn.Linear(width, dim))
        self.diffusion = nn.Sequential(nn.Linear(dim, width), nn.Tanh(), nn.Linear(width, dim),
                                       nn.Sigmoid())

    def f(self, t, y):
        return self.drift(y)

    def g(self, t, y):
        return 0.3 * self.diffusion(y)


# Evaluations of (f, g) per step of each method, as the floor chains them. Milstein's forward-mode JVP
# of g is counted as a second full (f, g) evaluation, so its floor is an overestimate.
EVALS_PER_STEP = {"euler": 1, "milstein": 2, "heun": 2, "midpoint": 2, "reversible_heun": 1}


def _cases(quick: bool):
    sizes = [(32, 4, 32)] if quick else [(32, 4, 32), (256, 8, 64)]
    methods = [("euler", "ito"), ("heun", "stratonovich"), ("midpoint", "stratonovich"),
               ("reversible_heun", "stratonovich")]
    if not quick:
        methods.insert(1, ("milstein", "ito"))
    return sizes, methods


def _fns(sde, y0, t, method):
    import torchsde

    def loss(ys):
        return ys.pow(2).sum()

    def ours_forward():
        with torch.no_grad():
            psde.sdeint(sde, y0, t, method=method, dt=DT)

    def theirs_forward():
        with torch.no_grad():
            torchsde.sdeint(sde, y0, t, method=method, dt=DT)

    def ours_grad(adjoint="direct"):
        loss(psde.sdeint(sde, y0, t, method=method, dt=DT, adjoint=adjoint)).backward()

    def theirs_grad():
        loss(torchsde.sdeint(sde, y0, t, method=method, dt=DT)).backward()

    def theirs_adjoint():
        loss(torchsde.sdeint_adjoint(sde, y0, t, method=method, dt=DT,
                                     adjoint_method="adjoint_reversible_heun")).backward()

    floor = _network_floor(sde, y0, method)
    rows = [("forward", ours_forward, theirs_forward, floor(False)),
            ("gradient, direct", ours_grad, theirs_grad, floor(True))]
    if method == "reversible_heun":
        rows.append(("gradient, reversible adjoint", lambda: ours_grad("reversible"),
                     theirs_adjoint, None))
    return rows


def _network_floor(sde, y0, method):
    """A lower bound for any library: the method's evaluations of f and g per step (and, for the
    gradient, their backward passes), chained by the cheapest update y + h f + g dW with the noise
    drawn beforehand. It leaves out the method's own arithmetic, the Brownian motion and every
    solver overhead, so no implementation of the method can run faster."""
    evals = EVALS_PER_STEP[method]
    steps = round(T_END / DT)
    dws = torch.randn(steps, *y0.shape, generator=torch.Generator().manual_seed(0)) * DT ** 0.5

    def run(grad: bool):
        def chain():
            y = y0
            for k in range(steps):
                for _ in range(evals):
                    y = torch.addcmul(torch.add(y, sde.f(None, y), alpha=DT), sde.g(None, y), dws[k])
            return y

        def fn():
            if grad:
                chain().pow(2).sum().backward()
            else:
                with torch.no_grad():
                    chain()
        return fn
    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 9)
    sizes, methods = _cases(args.quick)
    # float64 times: torchsde's BrownianInterval slows down ~60x on float32 query times at
    # dt=0.01 (splits pile up at rounding-level gaps); pyjode handles times in float64 anyway.
    t = torch.tensor([0.0, 0.5, T_END], dtype=torch.float64)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {args.threads}, dt {DT}, t in [0, {T_END}], {repeats} repeats")
    print("| batch | d | width | method | task | pyjode (ms) | torchsde (ms) | ratio | floor ÷ torchsde |")
    print("|---|---|---|---|---|---|---|---|---|")
    for batch, dim, width in sizes:
        for method, sde_type in methods:
            torch.manual_seed(0)
            sde = NeuralSDE(dim, width, sde_type)
            y0 = torch.randn(batch, dim)
            for task, ours, theirs, floor in _fns(sde, y0, t, method):
                fns = {"pyjode": ours, "torchsde": theirs}
                if floor is not None:
                    fns["floor"] = floor
                times = interleaved(fns, repeats=repeats)
                ratio = times["pyjode"] / times["torchsde"]
                bound = f"{times['floor'] / times['torchsde']:.2f}" if floor is not None else "-"
                print(f"| {batch} | {dim} | {width} | {method} | {task} | "
                      f"{1e3 * times['pyjode']:.1f} | {1e3 * times['torchsde']:.1f} | "
                      f"{ratio:.2f} | {bound} |", flush=True)


if __name__ == "__main__":
    main()
