"""Stochastic Runge–Kutta methods of strong order 1.5 (Rößler 2010, "Runge–Kutta methods for the strong
approximation of solutions of stochastic differential equations", SIAM J. Numer. Anal. 48(3); torchsde's "srk").

Itô. Diagonal and scalar noise use SRI2 (Rößler's Table 5.2 "SRID2"), additive noise SRA1 (Table 6.1). Both need,
besides the increment I = ΔW, the space-time integral I0 = ∫_{t0}^{t1} (W_s − W_t0) ds. With h = t1 − t0:

SRI2, s = 1..4:
    H0_s = y + Σ_j A0_sj f(H0_j) h + Σ_j B0_sj g(H1_j) I0/h
    H1_s = y + Σ_j A1_sj f(H0_j) h + Σ_j B1_sj g(H1_j) √h
    y1   = y + Σ_s α_s f(H0_s) h + Σ_s g(H1_s) (β1_s I + β2_s I_kk/√h + β3_s I0/h + β4_s I_kkk/h),
with I_kk = (I² − h)/2, I_kkk = (I³ − 3hI)/6 (f at t0 + c0_s h, g at t0 + c1_s h; g·w elementwise).

SRA1, s = 1..2 (g does not depend on y):
    H0_s = y + Σ_j A0_sj f(H0_j) h + Σ_j B0_sj g(t0 + c1_j h)·I0/h
    y1   = y + Σ_s α_s f(H0_s) h + Σ_s g(t0 + c1_s h)·(β1_s I + β2_s I0/h).

Strong order 1.5 for diagonal and additive noise; 1.0 for scalar noise (the Itô–Taylor terms a scalar-noise
order 1.5 scheme would need with several state components are not all present). Each stage is evaluated once
(the tableau reads stage j's f and g again at every later stage; they are cached here)."""
from __future__ import annotations

import math

from ..noise_types import diffusion_product
from .method import SDEMethod, Step

# SRI2 (strong order 1.5 for diagonal noise)
_C0 = (0.0, 1.0, 0.5, 0.0)
_C1 = (0.0, 0.25, 1.0, 0.25)
_A0 = ((), (1.0,), (0.25, 0.25), (0.0, 0.0, 0.0))
_A1 = ((), (0.25,), (1.0, 0.0), (0.0, 0.0, 0.25))
_B0 = ((), (0.0,), (1.0, 0.5), (0.0, 0.0, 0.0))
_B1 = ((), (-0.5,), (1.0, 0.0), (2.0, -1.0, 0.5))
_ALPHA = (1 / 6, 1 / 6, 2 / 3, 0.0)
_BETA1 = (-1.0, 4 / 3, 2 / 3, 0.0)
_BETA2 = (1.0, -4 / 3, 1 / 3, 0.0)
_BETA3 = (2.0, -4 / 3, -2 / 3, 0.0)
_BETA4 = (-2.0, 5 / 3, -2 / 3, 1.0)

# SRA1 (strong order 1.5 for additive noise)
_SRA_C0 = (0.0, 0.75)
_SRA_C1 = (1.0, 0.0)
_SRA_A0 = ((), (0.75,))
_SRA_B0 = ((), (1.5,))
_SRA_ALPHA = (1 / 3, 2 / 3)
_SRA_BETA1 = (1.0, 0.0)
_SRA_BETA2 = (-1.0, 1.0)


def _make_step(sde, f_and_g, noise_type) -> Step:
    if noise_type == "additive":
        return _additive_step(sde)
    if noise_type not in ("diagonal", "scalar"):
        raise ValueError(f"method 'srk' supports diagonal, scalar and additive noise, not {noise_type!r}.")
    scalar = noise_type == "scalar"

    def step(t0, t1, h, y, control):
        i_k, i_k0 = control
        sqrt_h = math.sqrt(h)
        i_kk = (i_k * i_k - h) * 0.5
        i_kkk = (i_k * i_k * i_k - 3 * h * i_k) * (1 / 6)
        fs, gs, y1 = [], [], y
        for s in range(4):
            h0, h1 = y, y
            for j in range(s):
                if _A0[s][j]:
                    h0 = h0 + (_A0[s][j] * h) * fs[j]
                if _B0[s][j]:
                    h0 = h0 + gs[j] * i_k0 * (_B0[s][j] / h)
                if _A1[s][j]:
                    h1 = h1 + (_A1[s][j] * h) * fs[j]
                if _B1[s][j]:
                    h1 = h1 + (_B1[s][j] * sqrt_h) * gs[j]
            # f of the last stage has weight 0 and no later stage reads it
            f = sde.f(t0 + _C0[s] * h, h0) if s < 3 else None
            g = sde.g(t0 + _C1[s] * h, h1)
            g = g[..., 0] if scalar else g
            fs.append(f)
            gs.append(g)
            weight = (_BETA1[s] * i_k + (_BETA2[s] / sqrt_h) * i_kk + (_BETA3[s] / h) * i_k0
                      + (_BETA4[s] / h) * i_kkk)
            if _ALPHA[s]:
                y1 = y1 + (_ALPHA[s] * h) * f
            y1 = y1 + g * weight
        return y1
    return step


def _additive_step(sde) -> Step:
    prod = diffusion_product("additive")

    def step(t0, t1, h, y, control):
        i_k, i_k0 = control
        g_at = {}

        def g(c):  # additive noise: g depends on t only, evaluated at y0 as torchsde does
            if c not in g_at:
                g_at[c] = sde.g(t0 + c * h, y)
            return g_at[c]

        fs, y1 = [], y
        for i in range(2):
            h0 = y
            for j in range(i):
                h0 = h0 + (_SRA_A0[i][j] * h) * fs[j] + prod(g(_SRA_C1[j]), i_k0 * (_SRA_B0[i][j] / h))
            f = sde.f(t0 + _SRA_C0[i] * h, h0)
            fs.append(f)
            y1 = y1 + (_SRA_ALPHA[i] * h) * f
            y1 = y1 + prod(g(_SRA_C1[i]), _SRA_BETA1[i] * i_k + (_SRA_BETA2[i] / h) * i_k0)
        return y1
    return step


SRK = SDEMethod("srk", "ito", ("diagonal", "scalar", "additive"), _make_step, levy_area="space-time")
