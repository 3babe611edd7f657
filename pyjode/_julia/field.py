"""The vector field as Julia sees it: four callbacks over buffers that Python owns.

Julia copies its state into ``ubuf`` (and the adjoint into ``abuf``), writes the time into the host
``tbuf``, calls one of the methods below with no arguments, and reads the results back from ``dubuf``,
``dabuf`` or ``gpbuf``. Parameter VJPs at several points (quadrature nodes, the stages of a
Runge–Kutta step) are staged in ``Ubuf``/``Abuf`` with times ``Tbuf`` and weights ``wbuf`` and taken in
one call. The buffers are allocated once per solve and wrapped by Julia once.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Tuple

import torch

from ..adjoints.continuous import weighted_param_vjp

__all__ = ["TorchField"]


def _check_output(f: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"func(t, y) must return a torch.Tensor, got {type(f).__name__}")
    if f.shape != y.shape or f.dtype != y.dtype:
        raise ValueError(
            f"func(t, y) returned shape {tuple(f.shape)} and dtype {f.dtype} for y of shape {tuple(y.shape)} "
            f"and dtype {y.dtype}; the vector field must return dy/dt with the shape and dtype of y"
        )


def _grad(out: torch.Tensor, inputs, cotangent):
    """``autograd.grad`` that answers ``None`` for every input when ``out`` does not depend on any."""
    if not out.requires_grad:
        return (None,) * len(inputs)
    return torch.autograd.grad(out, inputs, cotangent, allow_unused=True)


class TorchField:
    """Owns every buffer Julia reads or writes for one solve of ``func`` on states shaped ``shape``.

    Args:
        func: the vector field ``func(t, y)``; ``t`` is a 0-dim tensor of the state's dtype and device.
        shape: the state's shape.
        params: the tensors whose gradients the adjoint returns (``adjoint_params``).
        like: a tensor with the state's dtype and device.
        max_nodes: how many points one parameter VJP may stage (quadrature nodes of several steps are
            batched up to this many).
    """

    def __init__(self, func: Callable, shape: Sequence[int], params: Sequence[torch.Tensor],
                 like: torch.Tensor, max_nodes: int):
        self.func = func
        self.shape = tuple(shape)
        self.params = tuple(params)
        n = math.prod(self.shape)
        opts = dict(dtype=like.dtype, device=like.device)
        self._opts = opts
        host = dict(dtype=torch.float64, device="cpu")
        self.tbuf = torch.zeros(1, **host)
        self.Tbuf = torch.zeros(max_nodes, **host)
        self.wbuf = torch.zeros(max_nodes, **host)
        self.ubuf = torch.zeros(n, **opts)
        self.dubuf = torch.zeros(n, **opts)
        self.abuf = torch.zeros(n, **opts)
        self.dabuf = torch.zeros(n, **opts)
        self.Ubuf = torch.zeros(max_nodes, n, **opts)
        self.Abuf = torch.zeros(max_nodes, n, **opts)
        self.gpbuf = torch.zeros(sum(p.numel() for p in self.params), **opts)
        # How gpbuf splits into parameter tensors: the RMS backsolve norm measures each on its own.
        self.param_sizes = tuple(int(p.numel()) for p in self.params)
        self._cuda = like.is_cuda

    def buffers(self) -> Tuple[torch.Tensor, ...]:
        """The buffers in the order of ``PyJODE.make_field``."""
        return (self.tbuf, self.Tbuf, self.wbuf, self.ubuf, self.dubuf, self.abuf, self.dabuf,
                self.Ubuf, self.Abuf, self.gpbuf)

    def _time(self, value: float) -> torch.Tensor:
        return torch.full((), value, **self._opts)

    def _eval(self, t: float, y: torch.Tensor) -> torch.Tensor:
        f = self.func(self._time(t), y)
        _check_output(f, y)
        return f

    def _done(self) -> None:
        # Julia reads the outputs as soon as the callback returns, on its own stream.
        if self._cuda:
            torch.cuda.current_stream().synchronize()

    def _flat_param_grads(self, grads) -> torch.Tensor:
        return torch.cat([
            (torch.zeros(p.numel(), **self._opts) if g is None else g.reshape(-1).to(**self._opts))
            for g, p in zip(grads, self.params)
        ]) if self.params else self.gpbuf.new_zeros(0)

    # Called from Julia (main thread, GIL held).

    def rhs(self) -> None:
        """dubuf = f(tbuf, ubuf)."""
        with torch.no_grad():
            self.dubuf.copy_(self._eval(float(self.tbuf[0]), self.ubuf.view(self.shape)).reshape(-1))
        self._done()

    def vjp_state(self) -> None:
        """dubuf = f(t, u); dabuf = aᵀ ∂f/∂u, with no parameter VJP (autograd prunes it)."""
        with torch.enable_grad():
            y = self.ubuf.view(self.shape).detach().requires_grad_(True)
            f = self._eval(float(self.tbuf[0]), y)
            (gy,) = _grad(f, (y,), self.abuf.view(self.shape))
        with torch.no_grad():
            self.dubuf.copy_(f.reshape(-1))
            if gy is None:
                self.dabuf.zero_()
            else:
                self.dabuf.copy_(gy.reshape(-1))
        self._done()

    def vjp_all(self) -> None:
        """As :meth:`vjp_state`, and gpbuf = aᵀ ∂f/∂θ, from one backward pass."""
        with torch.enable_grad():
            y = self.ubuf.view(self.shape).detach().requires_grad_(True)
            f = self._eval(float(self.tbuf[0]), y)
            grads = _grad(f, (y, *self.params), self.abuf.view(self.shape))
        with torch.no_grad():
            self.dubuf.copy_(f.reshape(-1))
            if grads[0] is None:
                self.dabuf.zero_()
            else:
                self.dabuf.copy_(grads[0].reshape(-1))
            self.gpbuf.copy_(self._flat_param_grads(grads[1:]))
        self._done()

    def vjp_params(self, k) -> None:
        """gpbuf = Σ_{j<k} wbuf[j] · Abuf[j]ᵀ ∂f/∂θ(Tbuf[j], Ubuf[j]).

        The same batched VJP as the PyTorch backend's quadrature adjoint (``torch.func.vmap`` over the
        nodes, with respect to the parameters only), so both backends weigh nodes identically.
        """
        k = int(k)
        if not self.params:
            self._done()
            return
        T = self.Tbuf[:k].to(**self._opts)
        W = self.wbuf[:k].to(**self._opts)
        Y = self.Ubuf[:k].view(k, *self.shape)
        A = self.Abuf[:k].view(k, *self.shape)
        grads = weighted_param_vjp(self.func, self.params, T, Y, A, W, max(k, 1))
        with torch.no_grad():
            self.gpbuf.copy_(self._flat_param_grads(grads))
        self._done()
