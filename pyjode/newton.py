"""Jacobians and the linear algebra of the simplified Newton iteration of implicit Runge–Kutta methods.

The stage equations of a step of size ``h`` are solved by the simplified Newton iteration (Hairer & Wanner,
*Solving ODEs II*, §IV.8): with one Jacobian ``J ≈ ∂f/∂y`` held fixed,

* a diagonally implicit stage ``z = base + h g f(z)`` iterates ``(I - h g J) dz = base + h g f(z) - z``;
* a fully implicit method's stage increments ``W = Z - y`` iterate
  ``(I - h A ⊗ J) dW = -W + h (A ⊗ I) F(y + W)``.

The matrices are factorised once per step size and Jacobian and reused by every iteration and every
stage with the same diagonal entry: small ones (the usual stiff system of a few equations) are inverted,
so that a solve is one matrix product, larger ones LU-factorised (:class:`NewtonFactor`).

**Jacobian structure.** A Jacobian is a list of blocks ``(start, stop, J)`` along the flat state: ``J`` is
``(B, d, d)`` for ``B`` independent samples of ``d`` elements each (``B = 1`` for a full Jacobian), or
``None`` for a part whose equations do not depend on it (identity Newton matrix). The continuous
adjoints' augmented systems ``[y, a, a_θ]`` give ``[(J), (-J^T), None]`` this way (see
:func:`adjoint_jacobian`): the Newton matrix drops the second-derivative coupling, which only slows the
iteration's convergence, never changes what it converges to.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

Blocks = List[Tuple[int, int, Optional[torch.Tensor]]]

JACOBIAN_MODES = ("full", "batch")


@dataclass
class NewtonStats:
    """Work of the implicit solves run with one method object (accumulated over solves)."""

    jacobians: int = 0
    factorizations: int = 0
    newton_iterations: int = 0
    newton_failures: int = 0


#: Up to this many outputs (``d``) the Jacobian is taken as ``d`` vector-Jacobian products on one recorded
#: evaluation rather than by ``torch.func.jacrev``, whose tracing costs ~0.6 ms whatever ``d``: on CPU,
#: for ``d = 2`` the products take 0.2–0.26 ms, for ``d = 4`` 0.35 ms and for ``d = 8`` 0.68 ms, past the
#: break-even.
SMALL_JACOBIAN = 6


def field_jacobian(func: Callable, t: torch.Tensor, y: torch.Tensor, mode: str) -> torch.Tensor:
    """∂f/∂y at ``(t, y)``, without a graph.

    ``mode="full"``: the whole ``(1, n, n)`` Jacobian of the flattened state. ``mode="batch"``: the
    per-sample ``(B, d, d)`` Jacobians of a field whose samples (along ``y``'s first dimension) are
    independent, from one reverse-mode Jacobian of ``sum_b f(t, y)_b`` (``torch.func.jacrev``): ``d``
    vector-Jacobian products, whatever ``B``. For ``d <= SMALL_JACOBIAN``, and for a field that
    ``torch.func`` cannot trace, the same products are taken one at a time with ``torch.autograd.grad``.
    """
    y = y.detach()
    shape = y.shape
    n = y.numel()
    batched = mode == "batch" and y.dim() >= 2
    if batched:
        B, d = shape[0], n // shape[0]

        def g(z):
            return func(t, z).sum(0).reshape(-1)
    else:
        B, d = 1, n

        def g(z):
            return func(t, z.view(shape)).reshape(-1)

    z0 = y if batched else y.reshape(-1)  # a batch of one keeps its batch dimension: the field may index it
    with torch.no_grad():
        if d <= SMALL_JACOBIAN:
            J = _jacobian_by_vjps(g, z0)
        else:
            try:
                J = torch.func.jacrev(g)(z0)
            except Exception:  # noqa: BLE001 - a field torch.func cannot trace: one VJP per output element
                J = _jacobian_by_vjps(g, z0)
    # J[i, b, k] = ∂f_{b,i}/∂y_{b,k}
    return J.reshape(d, B, d).permute(1, 0, 2).contiguous()


def _jacobian_by_vjps(g, z0):
    with torch.enable_grad():
        z = z0.detach().requires_grad_(True)
        out = g(z)
        if not out.requires_grad:  # f does not depend on y (nor on anything that requires grad): J = 0
            return torch.zeros(out.numel(), *z.shape, dtype=z.dtype, device=z.device)
        rows = []
        for i in range(out.numel()):
            (row,) = torch.autograd.grad(out[i], z, retain_graph=i < out.numel() - 1, allow_unused=True)
            rows.append(torch.zeros_like(z) if row is None else row)
    return torch.stack(rows).detach()


def find_blocks_hook(field):
    """The ``newton_blocks`` of a field (set by the continuous adjoints on their augmented systems),
    looking through the loop's counting and checking wrappers; ``None`` for an ordinary field."""
    from .integrate import CheckedField, CountingField

    f = field
    while True:
        hook = getattr(f, "newton_blocks", None)
        if hook is not None:
            return hook
        if isinstance(f, (CountingField, CheckedField)):
            f = f.func
        else:
            return None


def adjoint_jacobian(func: Callable, shape, n_extra: int, y_of_t: Optional[Callable] = None):
    """``newton_blocks`` for a continuous adjoint's backward field.

    With ``y_of_t`` None the state is ``[y, a, rest]`` (``rest`` of ``n_extra`` elements, an integral such
    as a_θ that feeds nothing back) with y' = f, a' = -J^T a; otherwise the state is ``[a, rest]`` and y
    is read from ``y_of_t(t)``.
    """
    n = int(torch.Size(shape).numel())

    def blocks(t, s, mode: str) -> Blocks:
        if y_of_t is None:
            J = field_jacobian(func, t, s[:n].view(shape), mode)
            out = [(0, n, J), (n, 2 * n, -J.transpose(1, 2))]
            if n_extra:
                out.append((2 * n, 2 * n + n_extra, None))
            return out
        J = field_jacobian(func, t, y_of_t(t).reshape(shape), mode)
        return [(0, n, -J.transpose(1, 2))] + ([(n, n + n_extra, None)] if n_extra else [])

    return blocks


def _eye(m: int, like: torch.Tensor) -> torch.Tensor:
    return _cached_eye(m, like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _cached_eye(m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Identity matrices, made once per size (only ever read: the Newton matrices are built out of place)."""
    return torch.eye(m, dtype=dtype, device=device)


#: Newton matrices of at most this order are inverted explicitly, so that each Newton iteration solves
#: with one matrix product. On a small state the cost of a solve is the call, not the arithmetic: on CPU
#: ``lu_solve`` takes ~10 µs where a product takes ~2 µs, and a step solves 3–30 times per factorisation.
#: Larger matrices keep their LU factors (an inverse costs three times the flops of an LU). The iteration
#: corrects the rounding of either solve: it only needs a contraction, not an exact step.
SMALL_INVERSE = 64


def _small_inverse(M: torch.Tensor) -> torch.Tensor:
    """``M^{-1}`` of small matrices, NaN where ``M`` is singular. A CPU matrix without a graph goes through
    NumPy's LAPACK binding (~11 µs for 6 x 6, where ``torch.linalg.inv_ex`` takes ~21 µs, nearly all of it
    call overhead)."""
    if M.device.type == "cpu" and M.dtype in (torch.float32, torch.float64) and not M.requires_grad:
        try:
            return torch.from_numpy(np.linalg.inv(M.numpy()))
        except np.linalg.LinAlgError:  # singular: the iteration reports the non-finite increment
            return torch.full_like(M, math.nan)
    return torch.linalg.inv_ex(M).inverse


class NewtonFactor:
    """``M^{-1}`` applied to right-hand sides, for a batch of ``(B, m, m)`` Newton matrices ``M`` (or one
    ``(m, m)`` matrix, ``B = 1``): an
    explicit inverse for small ``m`` (``SMALL_INVERSE``), LU factors otherwise. A singular ``M`` gives
    non-finite solutions, which the Newton iteration reports as a failure (the step is then retried
    smaller), rather than an exception."""

    __slots__ = ("inverse", "lu", "batch")

    def __init__(self, M: torch.Tensor):
        self.batch = 1 if M.dim() == 2 else M.shape[0]
        m = M.shape[-1]
        if m <= SMALL_INVERSE:
            inverse = _small_inverse(M)
            # one sample: kept (m, m), so a solve is one matrix-vector product
            self.inverse, self.lu = (inverse.view(m, m) if self.batch == 1 else inverse), None
        else:
            self.inverse, self.lu = None, torch.linalg.lu_factor_ex(M.reshape(self.batch, m, m))[:2]

    def solve_flat(self, r: torch.Tensor) -> torch.Tensor:
        """``M^{-1} r`` for ``r`` of shape ``(B m,)``, sample-major (differentiable in ``r``)."""
        if self.inverse is not None:
            if self.batch == 1:
                return torch.mv(self.inverse, r)
            return torch.bmm(self.inverse, r.view(self.batch, -1, 1)).view(-1)
        LU, piv = self.lu
        return torch.linalg.lu_solve(LU, piv, r.reshape(self.batch, -1, 1)).reshape(-1)


def factor_dirk(blocks: Blocks, hg: float, stats: NewtonStats):
    """Factors of ``I - hg J`` per block, as ``(start, stop, NewtonFactor or None)``."""
    out = []
    for start, stop, J in blocks:
        if J is None:
            out.append((start, stop, None))
        else:
            J = J[0] if J.shape[0] == 1 else J
            out.append((start, stop, NewtonFactor(torch.sub(_eye(J.shape[-1], J), J, alpha=hg))))
    stats.factorizations += 1
    return out


def solve_dirk(factors, r: torch.Tensor) -> torch.Tensor:
    """``(I - hg J)^{-1} r`` for a flat ``r`` (differentiable in ``r``)."""
    if len(factors) == 1 and factors[0][2] is not None:  # one block over the whole state: no slicing
        return factors[0][2].solve_flat(r)
    pieces = []
    for start, stop, F in factors:
        piece = r[start:stop]
        pieces.append(piece if F is None else F.solve_flat(piece))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def firk_matrix(A: torch.Tensor, h: float, Js: torch.Tensor) -> torch.Tensor:
    """``I - h [a_ij J_j]`` as ``(B, s d, s d)`` from stage Jacobians ``Js`` of shape ``(B, s, d, d)``
    (each stage's own Jacobian at the converged stages)."""
    B, s, d, _ = Js.shape
    # M[b, i, p, j, q] = a_ij J_j[b, p, q]
    M = A[None, :, None, :, None] * Js.permute(0, 2, 1, 3)[:, None, :, :, :]
    return _eye(s * d, Js) - h * M.reshape(B, s * d, s * d)


def simplified_firk_matrix(A: torch.Tensor, h: float, J: torch.Tensor) -> torch.Tensor:
    """``I - h A ⊗ J`` as ``(B, s d, s d)`` for one Jacobian ``J`` of shape ``(B, d, d)`` shared by all
    stages (the simplified iteration), ``(s d, s d)`` when ``B = 1``: a Kronecker product, in as few
    operations as possible."""
    B, d = J.shape[0], J.shape[-1]
    s = A.shape[0]
    if B == 1:
        K = torch.kron(A, J[0].contiguous())  # (kron fails on some transposed views)
    else:  # K[b, i, p, j, q] = a_ij J[b, p, q]
        K = (A[None, :, None, :, None] * J[:, None, :, None, :]).reshape(B, s * d, s * d)
    return torch.sub(_eye(s * d, J), K, alpha=h)


def factor_firk(blocks: Blocks, A: torch.Tensor, h: float, stats: NewtonStats, per_stage=None):
    """Factors of ``I - h A ⊗ J`` per block (``per_stage[k]``: that block's ``(B, s, d, d)`` stage
    Jacobians, when they differ between stages), as ``(start, stop, NewtonFactor or None)``."""
    out = []
    for k, (start, stop, J) in enumerate(blocks):
        if J is None:
            out.append((start, stop, None))
            continue
        M = firk_matrix(A, h, per_stage[k]) if per_stage is not None else simplified_firk_matrix(A, h, J)
        out.append((start, stop, NewtonFactor(M)))
    stats.factorizations += 1
    return out


def solve_firk(factors, R: torch.Tensor) -> torch.Tensor:
    """``(I - h A ⊗ J)^{-1} R`` for stage residuals ``R`` of shape ``(s, n)`` (differentiable in ``R``)."""
    s = R.shape[0]
    if len(factors) == 1 and factors[0][2] is not None and factors[0][2].batch == 1:
        # one block, one sample: R's row-major layout (stage, element) is the Kronecker product's
        return factors[0][2].solve_flat(R.reshape(-1)).view(s, -1)
    pieces = []
    for start, stop, F in factors:
        piece = R[:, start:stop]
        if F is not None:
            B = F.batch
            x = piece.reshape(s, B, -1).transpose(0, 1).reshape(-1)
            piece = F.solve_flat(x).view(B, s, -1).transpose(0, 1).reshape(s, -1)
        pieces.append(piece)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


def stage_jacobians(blocks_at: Sequence[Blocks]) -> list:
    """Per block, the ``(B, s, d, d)`` stack of the stages' Jacobians (``None`` blocks stay ``None``)."""
    out = []
    for k in range(len(blocks_at[0])):
        Js = [b[k][2] for b in blocks_at]
        out.append(None if Js[0] is None else torch.stack(Js, dim=1))
    return out
