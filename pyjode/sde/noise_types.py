"""How the diffusion acts on the Brownian increment, for each of torchsde's noise types.

    diagonal  g: y.shape            dW: y.shape           g * dW
    scalar    g: (*y.shape, 1)      dW: (*batch, 1)       g[..., 0] * dW
    additive  g: (*y.shape, m)      dW: (*batch, m)       g @ dW   (g independent of y)
    general   g: (*y.shape, m)      dW: (*batch, m)       g @ dW

`batch` is y.shape[:-1]. The product is linear in g, so its cotangent with respect to g
(`diffusion_cotangent`) is what an exact adjoint needs.
"""
from __future__ import annotations

from typing import Callable

import torch

NOISE_TYPES = ("diagonal", "scalar", "additive", "general")
SDE_TYPES = ("ito", "stratonovich")

Product = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _diagonal_product(g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return g * dw


def _scalar_product(g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return g[..., 0] * dw


def _matrix_product(g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return (g @ dw.unsqueeze(-1)).squeeze(-1)


def _diagonal_cotangent(a: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return a * dw


def _scalar_cotangent(a: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return (a * dw).unsqueeze(-1)


def _matrix_cotangent(a: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return a.unsqueeze(-1) * dw.unsqueeze(-2)


def _diagonal_axpy(y, g, dw, c):
    return torch.addcmul(y, g, dw, value=c)


def _scalar_axpy(y, g, dw, c):
    return torch.addcmul(y, g[..., 0], dw, value=c)


def _matrix_axpy(y, g, dw, c):
    return torch.add(y, (g @ dw.unsqueeze(-1)).squeeze(-1), alpha=c)


def _product_axpy(y, g, dw, c):
    # g is a diffusion-vector product operator (an SDE given through g_prod): y + c·g(dW)
    out = g(dw)
    return torch.add(y, out) if c == 1.0 else torch.add(y, out, alpha=c)


_AXPY = {"g_prod": _product_axpy, "diagonal": _diagonal_axpy, "scalar": _scalar_axpy, "additive": _matrix_axpy,
         "general": _matrix_axpy}

_PRODUCTS = {"diagonal": (_diagonal_product, _diagonal_cotangent),
             "scalar": (_scalar_product, _scalar_cotangent),
             "additive": (_matrix_product, _matrix_cotangent),
             "general": (_matrix_product, _matrix_cotangent)}


def diffusion_product(noise_type: str) -> Product:
    """(g, dW) -> g·dW for this noise type."""
    return _PRODUCTS[noise_type][0]


def diffusion_axpy(noise_type: str) -> Callable:
    """(y, g, dW, c) -> y + c·(g·dW) in as few kernels (and autograd nodes) as possible."""
    return _AXPY[noise_type]


def diffusion_cotangent(noise_type: str) -> Product:
    """(a, dW) -> the cotangent of g in <a, g·dW>, i.e. d<a, g·dW>/dg."""
    return _PRODUCTS[noise_type][1]


def check_sde(sde, where: str) -> tuple[str, str]:
    """Validate torchsde's SDE protocol; returns (noise_type, sde_type)."""
    for name in ("f", "g"):
        if not callable(getattr(sde, name, None)):
            raise TypeError(f"{where}: sde must define a method {name}(t, y) (torchsde's convention).")
    noise_type = getattr(sde, "noise_type", None)
    sde_type = getattr(sde, "sde_type", None)
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"{where}: sde.noise_type must be one of {NOISE_TYPES}, got {noise_type!r}.")
    if sde_type not in SDE_TYPES:
        raise ValueError(f"{where}: sde.sde_type must be one of {SDE_TYPES}, got {sde_type!r}.")
    return noise_type, sde_type


def noise_shape(noise_type: str, y0: torch.Tensor, g0: torch.Tensor, where: str) -> torch.Size:
    """Shape of the Brownian motion, checking the diffusion's shape against the noise type."""
    if noise_type == "diagonal":
        expected, shape = y0.shape, y0.shape
    elif noise_type == "scalar":
        expected, shape = torch.Size((*y0.shape, 1)), torch.Size((*y0.shape[:-1], 1))
    else:
        if g0.dim() != y0.dim() + 1:
            raise ValueError(f"{where}: {noise_type} noise needs g(t, y) of shape (*y.shape, m); "
                             f"got {tuple(g0.shape)} for y of shape {tuple(y0.shape)}.")
        expected = torch.Size((*y0.shape, g0.shape[-1]))
        shape = torch.Size((*y0.shape[:-1], g0.shape[-1]))
    if g0.shape != expected:
        raise ValueError(f"{where}: sde.g(t, y) returned shape {tuple(g0.shape)}; {noise_type} "
                         f"noise with y of shape {tuple(y0.shape)} needs {tuple(expected)}.")
    if y0.dim() == 0 and noise_type != "diagonal":
        raise ValueError(f"{where}: {noise_type} noise needs y0 with a state dimension (..., d).")
    return shape


def diffusion_and_jvp(sde, t: torch.Tensor, y: torch.Tensor,
                      noise_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, (∂g/∂y)·g) for diagonal or scalar noise, both with the shape of g.

    For diagonal noise the second is g_i ∂g_i/∂y_i under the usual assumption that g_i depends
    on y only through y_i (needed by Milstein and by the Itô–Stratonovich correction); then
    ∂g/∂y is diagonal and equals the vector-Jacobian product 1ᵀ ∂g/∂y: one evaluation of g and
    one cheap reverse pass (torchsde computes it the same way). Scalar noise needs the full
    Jacobian-vector product, taken by forward-mode AD, which is also the fallback inside
    torch.func transforms (vmap), where autograd.grad is unavailable.
    """
    if noise_type == "diagonal":
        try:
            g, d = _diagonal_derivative(sde, t, y)
            return g, g * d
        except RuntimeError:
            pass
    g = sde.g(t, y)
    tangent = g[..., 0] if noise_type == "scalar" else g
    return g, torch.func.jvp(lambda u: sde.g(t, u), (y,), (tangent,))[1]


def _diagonal_derivative(sde, t: torch.Tensor, y: torch.Tensor):
    """(g, ∂g_i/∂y_i) for diagonal noise, differentiable when grad mode is on."""
    differentiable = torch.is_grad_enabled()
    with torch.enable_grad():
        y_in = y if y.requires_grad else y.detach().requires_grad_(True)
        g = sde.g(t, y_in)
        if not g.requires_grad:
            return g, torch.zeros_like(y)
        d, = torch.autograd.grad(g, y_in, torch.ones_like(g), create_graph=differentiable,
                                 allow_unused=True)
    if not differentiable:
        g = g.detach()
    return g, (torch.zeros_like(y) if d is None else d)
