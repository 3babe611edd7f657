"""One solve on the Julia backend: the calls into PyJODE, with Python-owned buffers in and out.

``module`` is the Julia module ``PyJODE`` (through juliacall), or anything with the same functions, such
as the pure-Python stand-in the tests use. Julia names ending in ``!`` are reached as ``_b``.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch

from ..adjoints.continuous import output_time_gradients
from .dlpack import to_julia
from .field import TorchField
from .plan import JuliaPlan

__all__ = ["JuliaSolve"]


def _record(stats: Any, when: str, counts) -> None:
    if stats is None:
        return
    nfe, steps, rejected = (int(c) for c in counts)
    setattr(stats, f"nfe_{when}", getattr(stats, f"nfe_{when}") + nfe)
    setattr(stats, f"steps_{when}", getattr(stats, f"steps_{when}") + steps)
    setattr(stats, f"rejected_{when}", getattr(stats, f"rejected_{when}") + rejected)


def _is_julia_error(exc: BaseException) -> bool:
    # juliacall.JuliaError, named rather than imported so that only the loader imports juliacall.
    return type(exc).__name__ == "JuliaError"


class JuliaSolve:
    """The forward solve and the gradient of one ``odeint`` call on the Julia backend.

    Every tensor handed to Julia is also held in ``self._owners`` for as long as this object lives, so a
    temporary (the contiguous copy of ``y0``, the tableau) can never be freed under a Julia view.
    """

    def __init__(self, module: Any, plan: JuliaPlan, func, y0: torch.Tensor, ts: Sequence[float],
                 params: Sequence[torch.Tensor], stats: Any = None):
        self.module = module
        self.plan = plan
        self.func = func
        self.shape = tuple(y0.shape)
        self.like = y0
        self.n = y0.numel()
        self.ts_list = [float(t) for t in ts]
        self.ts = torch.tensor(self.ts_list, dtype=torch.float64)
        self.params = tuple(params)
        self.stats = stats
        self._owners: List[torch.Tensor] = []
        self.field = TorchField(func, self.shape, self.params, y0, plan.max_nodes(self.n))
        self.handle = module.make_field(self.field, self.field.param_sizes,
                                        *(self._jl(b) for b in self.field.buffers()))
        self.tableau = None
        self.dense_forward = None  # the stored forward solution (a Julia object) for Quadrature(state="stored")
        if plan.tableau is not None:
            tab = plan.tableau
            host = dict(dtype=torch.float64)
            self.tableau = module.tableau_rowmajor(
                self._jl(torch.as_tensor(tab.a, **host)), self._jl(torch.as_tensor(tab.b, **host)),
                self._jl(torch.as_tensor(tab.c, **host)))

    def _jl(self, t: torch.Tensor):
        return to_julia(self.module, t, self._owners)

    def _call(self, name: str, *args, **kwargs):
        try:
            return getattr(self.module, name)(*args, **kwargs)
        except Exception as exc:
            if _is_julia_error(exc):
                raise RuntimeError(f"the Julia backend's {name.replace('_b', '!')} failed: {exc}") from exc
            raise  # Python errors raised inside a callback (e.g. a bad vector field) pass through unchanged

    def _new(self, *shape: int) -> torch.Tensor:
        return torch.empty(*shape, dtype=self.like.dtype, device=self.like.device)

    def forward(self, y0: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """The outputs ``(len(ts), *y0.shape)`` and what the backward pass needs besides them."""
        p = self.plan
        N = self.ts.numel()
        ys = self._new(N, self.n)
        if p.tableau is not None:
            z_end = self._new(self.n)
            counts = self._call("reversible_forward_b", self.handle, self._jl(y0), self._jl(self.ts), self._jl(ys),
                                self._jl(z_end), tableau=self.tableau, step_size=p.step_size,
                                coupling=p.coupling)
            saved: Tuple[torch.Tensor, ...] = (z_end,)
        else:
            keep = p.gradient == "quadrature" and p.state == "stored"
            counts = self._call("forward_b", self.handle, self._jl(y0), self._jl(self.ts), self._jl(ys),
                                method=p.method, rtol=p.rtol, atol=p.atol, step_size=p.step_size,
                                max_steps=p.max_steps, keep=keep)
            if keep:
                *counts, self.dense_forward = counts
            saved = ()
        _record(self.stats, "forward", counts)
        return ys.view(N, *self.shape), saved

    def backward(self, ys: torch.Tensor, saved: Sequence[torch.Tensor], grad_ys: torch.Tensor
                 ) -> Tuple[torch.Tensor, Tuple[Optional[torch.Tensor], ...]]:
        """``(dL/dy0, dL/dparams)`` given ``dL/dys``."""
        p = self.plan
        N = self.ts.numel()
        gys = grad_ys.to(dtype=self.like.dtype).reshape(N, self.n).contiguous()
        gy0 = self._new(self.n)
        gtheta = self._new(self.field.gpbuf.numel())
        common = (self.handle, self._jl(ys), )
        if p.gradient == "reversible":
            counts = self._call("reversible_adjoint_b", *common, self._jl(saved[0]), self._jl(self.ts),
                                self._jl(gys), self._jl(gy0), self._jl(gtheta), tableau=self.tableau,
                                step_size=p.step_size, coupling=p.coupling)
        else:
            name = "quadrature_adjoint_b" if p.gradient == "quadrature" else "backsolve_adjoint_b"
            if p.gradient == "quadrature":
                extra = dict(nodes=p.nodes, forward=self.dense_forward)
            else:
                extra = dict(norm=p.norm)
            counts = self._call(name, *common, self._jl(self.ts), self._jl(gys), self._jl(gy0), self._jl(gtheta),
                                method=p.adjoint_method, rtol=p.adjoint_rtol, atol=p.adjoint_atol,
                                step_size=p.step_size, max_steps=p.max_steps, **extra)
        _record(self.stats, "backward", counts)
        grads, offset = [], 0
        for q in self.params:
            g = gtheta[offset:offset + q.numel()].view(q.shape).to(dtype=q.dtype, device=q.device)
            grads.append(g)
            offset += q.numel()
        return gy0.view(self.shape), tuple(grads)

    def time_gradients(self, t: torch.Tensor, ys: torch.Tensor, grad_ys: torch.Tensor,
                       gy0: torch.Tensor) -> torch.Tensor:
        """dL/dt of a continuous adjoint, by the PyTorch backend's own end-point formulas (f at the
        output times only); a(t_0^+) is dL/dy0 without the direct dL/dy(t_0) term."""
        if not self.plan.time_gradients:
            raise RuntimeError(f"the Julia backend's {self.plan.gradient!r} gradient has no time gradients")
        grad_ys = grad_ys.to(dtype=ys.dtype)
        return output_time_gradients(self.func, t, self.ts_list, ys, grad_ys, gy0 - grad_ys[0])
