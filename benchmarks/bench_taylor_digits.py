"""Taylor–Lagrange classifier vs dopri5 neural ODEs on the bundled 8x8 digits (issue: Taylor–Lagrange NODEs).

All models share the field, the head, the initial weights and the batches; they train epoch by epoch in
turn (rotating order), and each model's training time is the sum of its epochs, midpoint fits included
for Taylor–Lagrange. Evaluation time is the median of interleaved full test-set passes. The baselines are
dopri5 at the paper's tolerance (1.4e-8) and at a practical one, trained with ``--adjoint`` (default the
quadrature adjoint). Everything runs in float64, which the 1.4e-8 tolerance needs.

    python -m benchmarks.bench_taylor_digits [--quick] [--epochs E] [--adjoint NAME] [--threads N]
"""

from __future__ import annotations

import argparse
import platform

import torch

import pyjode
from pyjode.data import digits_split
from pyjode.demo.taylor import Config, PlainTrainer, TaylorTrainer, accuracy, build_node, build_taylor, train_interleaved

from ._timing import interleaved

TIGHT = (1.4e-8, 1.4e-8)
PRACTICAL = (1e-3, 1e-4)


def _adjoint_or_fallback(name: str) -> str:
    try:
        pyjode.odeint(lambda t, y: -y, torch.ones(1), [0.0, 1.0], adjoint=name)
        return name
    except (ValueError, TypeError, NotImplementedError) as e:
        print(f"note: adjoint={name!r} is not available ({e}); the baselines use adjoint='direct'")
        return "direct"


def _solve_nfe(model, x) -> tuple[float, float]:
    """Forward NFE of one evaluation solve, and forward + backward NFE of one training solve."""
    node = model.integrator.node
    st = pyjode.Stats()
    node.odeint_kwargs["stats"] = st
    with torch.no_grad():
        model(x)
    evaluation = st.nfe_forward
    st = pyjode.Stats()
    node.odeint_kwargs["stats"] = st
    model(x).sum().backward()
    node.odeint_kwargs.pop("stats")
    model.zero_grad(set_to_none=True)
    return evaluation, st.nfe_forward + st.nfe_backward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--adjoint", default="quadrature")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    epochs = args.epochs or (3 if args.quick else 30)
    cfg = Config(epochs=epochs)
    adjoint = _adjoint_or_fallback(args.adjoint)
    x_train, y_train, x_test, y_test = digits_split(dtype=cfg.dtype)

    tl_model, tl = build_taylor(cfg)
    models = {"Taylor-Lagrange": tl_model,
              "dopri5 tol 1.4e-8": build_node(cfg, *TIGHT, adjoint),
              f"dopri5 rtol {PRACTICAL[0]:g} atol {PRACTICAL[1]:g}": build_node(cfg, *PRACTICAL, adjoint)}
    trainers = {name: (TaylorTrainer(m, tl, cfg) if m is tl_model else PlainTrainer(m, cfg))
                for name, m in models.items()}
    trained = train_interleaved(trainers, cfg, x_train, y_train)
    acc = {name: accuracy(m, x_test, y_test) for name, m in models.items()}
    evals = interleaved({name: (lambda m=m: accuracy(m, x_test, y_test)) for name, m in models.items()},
                        repeats=args.repeats)
    nfe = {name: _solve_nfe(m, x_test[: cfg.batch]) for name, m in models.items() if m is not tl_model}

    print(f"\n{epochs} epochs, batch {cfg.batch}, baseline adjoint={adjoint!r}, float64, "
          f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s)\n")
    print("| model | test acc | train s | train CPU s | eval s | NFE/eval solve | NFE/train solve (fwd+bwd) |")
    print("|---|---|---|---|---|---|---|")
    for name in models:
        if name == "Taylor-Lagrange":
            n_eval = n_train = f"{tl.passes_per_solve} graph passes"
        else:
            n_eval, n_train = nfe[name]
        print(f"| {name} | {acc[name]:.4f} | {trained[name].seconds:.2f} | {trained[name].cpu_seconds:.2f} | "
              f"{evals[name]:.4f} | {n_eval} | {n_train} |")
    print("\n| Taylor-Lagrange vs | train time ratio | train CPU time ratio | eval time ratio | "
          "accuracy difference (points) |")
    print("|---|---|---|---|---|")
    tl_run, e_tl = trained["Taylor-Lagrange"], evals["Taylor-Lagrange"]
    for name in models:
        if name != "Taylor-Lagrange":
            print(f"| {name} | {tl_run.seconds / trained[name].seconds:.3f} | "
                  f"{tl_run.cpu_seconds / trained[name].cpu_seconds:.3f} | {e_tl / evals[name]:.3f} | "
                  f"{100 * (acc['Taylor-Lagrange'] - acc[name]):+.2f} |")


if __name__ == "__main__":
    main()
