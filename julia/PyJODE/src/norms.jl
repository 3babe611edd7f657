# Error norms for OrdinaryDiffEq's `internalnorm` keyword.
#
# OrdinaryDiffEq calls `internalnorm(u, t)` on arrays (the scaled error) and on scalars (elementwise
# scaling), so a norm needs both methods.

"""
    PartsNorm(n, blocks, tail = ())

`max` over parts of the RMS of each part, the norm pyjode's PyTorch backend (`pyjode.norms.PartsNorm`)
uses on concatenated states. The parts are `blocks` leading blocks of length `n` (`u[1:n]`,
`u[n+1:2n]`, …: the state and its adjoint) and then the index ranges in `tail` (one per parameter
tensor, for the RMS backsolve norm). Entries in no part are not measured: a seminorm.

Cost on a GPU: the blocks are one reduction over an `n × blocks` matrix and one scalar copied to the
host, the same as OrdinaryDiffEq's default norm; each `tail` part adds one more. Only the RMS
backsolve norm (the reference the seminorm is compared with) has a tail.
"""
struct PartsNorm{R}
    n::Int
    blocks::Int
    tail::R
end
PartsNorm(n::Integer, blocks::Integer) = PartsNorm(Int(n), Int(blocks), ())

rms(x) = sqrt(sum(abs2, x) / max(length(x), 1))

function blocks_rms(u::AbstractArray, n::Int, blocks::Int)
    (n == 0 || blocks == 0) && return zero(real(eltype(u)))
    k = n * blocks
    head = length(u) == k ? u : view(u, 1:k)
    # sum(…; dims = 1) stays on the device (GPUArrays reduces CuArrays and their views there);
    # `maximum` of the 1 × blocks result is the single device-to-host copy.
    return sqrt(maximum(sum(abs2, reshape(head, n, blocks); dims = 1)) / n)
end

function (nrm::PartsNorm)(u::AbstractArray, t)
    head = blocks_rms(u, nrm.n, nrm.blocks)
    isempty(nrm.tail) && return head
    return max(head, maximum(r -> rms(view(u, r)), nrm.tail))
end
(nrm::PartsNorm)(u::Number, t) = abs(u)

"""
    seminorm(n, p)

Step control for the backsolve state `[u; a; aθ]` (`n`, `n`, `p` entries) that ignores `aθ`: the
parameter adjoint is an integral that never feeds back into `(u, a)` (Kidger, Chen & Lyons 2021, §3).
"""
seminorm(n::Integer, p::Integer) = PartsNorm(n, 2)

"""
    fullnorm(n, sizes)

The backsolve state measured on every part: `u`, `a`, and each parameter tensor on its own
(`sizes` are their lengths, in order), as pyjode's PyTorch backend does with `Backsolve(norm="rms")`.
"""
function fullnorm(n::Integer, sizes)
    tail = UnitRange{Int}[]
    start = 2n
    for s in sizes
        s > 0 && push!(tail, (start + 1):(start + s))
        start += s
    end
    return PartsNorm(Int(n), 2, Tuple(tail))
end
