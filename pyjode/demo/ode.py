"""Neural ODE on a spiral: direct, continuous-adjoint and reversible gradients side by side (time, NFE, memory).

The data are trajectories of the cubic spiral y' = (y ** 3) A, A = [[-0.1, 2], [-2, -0.1]], generated here.
Each method trains the same MLP vector field from the same initial weights on the same mini-batches of
trajectory segments; the table reports the median time per iteration, forward/backward NFE per
iteration, the final loss, and the peak memory of one gradient measured in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import torch
from torch import nn

import pyjode
from .figures import pyplot, save

TRUE_A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])
SOLVER = dict(method="dopri5", rtol=1e-5, atol=1e-6)


def methods():
    """The gradient methods shown, as (label, odeint keyword arguments)."""
    out = [
        ("direct", dict(adjoint="direct")),
        ("backsolve (rms)", dict(adjoint=pyjode.Backsolve(norm="rms"))),
        ("backsolve (seminorm)", dict(adjoint=pyjode.Backsolve(norm="seminorm"))),
        ("quadrature (stored)", dict(adjoint=pyjode.Quadrature(state="stored"))),
        ("quadrature (resolve)", dict(adjoint=pyjode.Quadrature(state="resolve"))),
    ]
    if hasattr(pyjode, "Reversible"):
        out.append(("reversible (dopri5)", dict(adjoint="reversible", method=pyjode.Reversible("dopri5"))))
    return out


class Field(nn.Module):
    def __init__(self, width: int = 50):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 2))

    def forward(self, t, y):
        return self.net(y ** 3)


def make_data(n_points: int = 200, t_end: float = 10.0):
    t = torch.linspace(0.0, t_end, n_points)
    with torch.no_grad():
        y = pyjode.odeint(lambda t, y: (y ** 3) @ TRUE_A, torch.tensor([[2.0, 0.0]]), t, rtol=1e-8, atol=1e-10)
    return t, y[:, 0]


def batches(t, y, n_iter: int, batch_size: int = 16, batch_time: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_iter):
        start = torch.randint(0, len(t) - batch_time, (batch_size,), generator=g)
        idx = start[None, :] + torch.arange(batch_time)[:, None]  # (batch_time, batch)
        yield y[start], t[:batch_time], y[idx]


def train(kwargs, t, y, n_iter, seed=0):
    torch.manual_seed(seed)
    func = Field()
    opt = torch.optim.Adam(func.parameters(), lr=1e-2)
    kw = dict(SOLVER, **kwargs)
    times, losses = [], []
    stats = pyjode.Stats()
    from tqdm import tqdm

    for y0, tb, target in tqdm(list(batches(t, y, n_iter, seed=seed)), leave=False, ncols=80):
        start = time.perf_counter()
        opt.zero_grad()
        pred = pyjode.odeint(func, y0, tb, stats=stats, **kw)
        loss = (pred - target).abs().mean()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return func, times, losses, stats


def peak_memory_mb(label: str) -> float:
    """Peak RSS growth of one gradient (batch 512, 40 output times) in a fresh Python process (Linux)."""
    if not Path("/proc/self/clear_refs").exists():
        return float("nan")
    out = subprocess.run([sys.executable, "-m", "pyjode.demo.ode", "--memory-probe", label],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["mb"]


def _memory_probe(label: str) -> None:
    kwargs = dict(methods())[label]
    torch.manual_seed(0)
    func = Field()
    t, y = make_data()
    y0 = y[torch.randint(0, 150, (512,))]
    tb = t[:40]
    pyjode.odeint(func, y0[:2], tb[:2], **dict(SOLVER, **kwargs)).sum().backward()  # warm up lazy inits
    base = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # Linux: reset the peak-RSS counter to the current RSS
        f.write("5")
    pyjode.odeint(func, y0, tb, **dict(SOLVER, **kwargs)).square().mean().backward()
    print(json.dumps({"mb": (_rss_kb("VmHWM") - base) / 1024.0}))


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def run(out_dir: Path, quick: bool = False) -> None:
    t, y = make_data()
    n_iter = 20 if quick else 150
    rows, fits = [], {}
    for label, kwargs in methods():
        func, times, losses, stats = train(kwargs, t, y, n_iter)
        with torch.no_grad():
            fits[label] = pyjode.odeint(func, y[:1], t, **SOLVER)[:, 0]
        rows.append((label, 1e3 * median(times), stats.nfe_forward / n_iter, stats.nfe_backward / n_iter,
                     sum(losses[-10:]) / 10, peak_memory_mb(label)))
    print(f"{n_iter} iterations each, dopri5 rtol={SOLVER['rtol']} atol={SOLVER['atol']}, batch 16 x 10 times")
    print(f"| {'method':<22} | ms/iter | fwd NFE/iter | bwd NFE/iter | final loss | peak MB (1 grad, batch 512) |")
    print("|" + "|".join("-" * w for w in (24, 9, 14, 14, 12, 29)) + "|")
    for label, ms, nf, nb, loss, mb in rows:
        print(f"| {label:<22} | {ms:7.1f} | {nf:12.0f} | {nb:12.0f} | {loss:10.4f} | {mb:27.1f} |")
    _plot(out_dir / "ode_spiral.png", t, y, fits)


def _plot(path, t, y, fits):
    plt = pyplot()

    n = len(fits)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, (label, fit) in zip(axes[0], fits.items()):
        ax.plot(y[:, 0], y[:, 1], "k.", ms=2, label="data")
        ax.plot(fit[:, 0], fit[:, 1], "C1-", lw=1.5, label="fit")
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Neural ODE fits of the cubic spiral, per gradient method")
    save(fig, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-probe":
        _memory_probe(sys.argv[2])
    else:
        run(Path("out"), quick="--quick" in sys.argv)
