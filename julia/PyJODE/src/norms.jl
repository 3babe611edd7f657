# Error norms for OrdinaryDiffEq's `internalnorm` keyword.
#
# OrdinaryDiffEq calls `internalnorm(u, t)` on arrays (the scaled error) and on scalars (elementwise
# scaling), so a norm needs both methods.

"""
    PartsNorm(parts)

`max` over `parts` (index ranges) of the RMS of `u[part]`: the norm pyjode's PyTorch backend uses on
concatenated states. Leaving a part out gives a seminorm.
"""
struct PartsNorm{R}
    parts::R
end

rms(x) = sqrt(sum(abs2, x) / max(length(x), 1))

(nrm::PartsNorm)(u::AbstractArray, t) = maximum(r -> rms(view(u, r)), nrm.parts)
(nrm::PartsNorm)(u::Number, t) = abs(u)

"""
    seminorm(n, p)

Step control for the backsolve state `[u; a; aθ]` (`n`, `n`, `p` entries) that ignores `aθ`: the
parameter adjoint is an integral that never feeds back into `(u, a)` (Kidger, Chen & Lyons 2021, §3).
"""
seminorm(n::Integer, p::Integer) = PartsNorm((1:n, (n + 1):(2n)))

"""The same state measured on all three parts (the non-seminorm reference)."""
fullnorm(n::Integer, p::Integer) = p > 0 ? PartsNorm((1:n, (n + 1):(2n), (2n + 1):(2n + p))) :
    seminorm(n, p)
