# Method names shared with pyjode's PyTorch backend, mapped onto OrdinaryDiffEq algorithms, and the one
# place where this package calls `solve`.

"""
An OrdinaryDiffEq algorithm under pyjode's name, with the orders pyjode's tableaus give it
(`order`; `error_order` is the order of the embedded estimate that controls the step, 0 when fixed-step).
Named `MethodSpec`, not `Method`, so as not to shadow `Core.Method`.
"""
struct MethodSpec{A}
    name::String
    alg::A
    order::Int
    error_order::Int
    adaptive::Bool
end

const METHOD_NAMES = ("euler", "midpoint", "heun", "rk4", "bosh3", "dopri5", "tsit5")

"""
    method_spec(name) -> MethodSpec

`euler`, `midpoint`, `heun`, `rk4` are fixed-step (they need `step_size`); `bosh3` (BS3), `dopri5` (DP5)
and `tsit5` (Tsit5) are adaptive. Orders as in `pyjode.tableau` (the Python tests compare them).
"""
function method_spec(name::AbstractString)
    name == "euler" && return MethodSpec("euler", Euler(), 1, 0, false)
    name == "midpoint" && return MethodSpec("midpoint", Midpoint(), 2, 0, false)
    name == "heun" && return MethodSpec("heun", Heun(), 2, 0, false)
    name == "rk4" && return MethodSpec("rk4", RK4(), 4, 0, false)
    name == "bosh3" && return MethodSpec("bosh3", BS3(), 3, 2, true)
    name == "dopri5" && return MethodSpec("dopri5", DP5(), 5, 4, true)
    name == "tsit5" && return MethodSpec("tsit5", Tsit5(), 5, 4, true)
    throw(ArgumentError("method=\"$name\" is not available in PyJODE; choose one of " *
                        join(METHOD_NAMES, ", ")))
end

"""
    default_nodes(m::MethodSpec)

Gauss–Legendre nodes per backward step when the caller gives none: ⌈q/2⌉ with q the order of the
step-size control (the embedded order of an adaptive method, the order of a fixed-step one). An m-node
rule is exact to degree 2m - 1, so its local error is at least of the solver's own order. The same
formula as `pyjode.adjoints.quadrature.default_nodes_per_step`, which Python passes explicitly.
"""
default_nodes(m::MethodSpec) = max(1, cld(m.adaptive ? m.error_order : m.order, 2))

"""Raised when a solve stops early; the message says where and what to try."""
struct SolveFailure <: Exception
    msg::String
end
Base.showerror(io::IO, e::SolveFailure) = print(io, e.msg)

"""Fixed steps per output interval, as pyjode's PyTorch backend takes them: equal steps landing on `tb`."""
nsteps(ta, tb, step_size) = max(1, ceil(Int, abs(tb - ta) / step_size - 1e-9))

"""Cap on attempted steps of adaptive solves when the caller sets none (pyjode's default too)."""
const DEFAULT_MAX_STEPS = 100_000

"""
Evaluations, accepted and rejected steps of one entry point's solves, and the cap on its attempted
steps: `max_steps` bounds the whole call, not each output interval, as in pyjode's PyTorch backend.
`nothing` means no cap (fixed-step methods without `max_steps`).
"""
mutable struct Counts
    nfe::Int
    steps::Int
    rejected::Int
    max_steps::Union{Int,Nothing}
end

function Counts(m::MethodSpec, max_steps)
    cap = max_steps === nothing ? (m.adaptive ? DEFAULT_MAX_STEPS : nothing) : Int(max_steps)
    cap === nothing || cap > 0 || throw(ArgumentError("max_steps=$max_steps must be positive"))
    return Counts(0, 0, 0, cap)
end

function add!(c::Counts, sol)
    c.nfe += sol.stats.nf
    c.steps += sol.stats.naccept
    c.rejected += sol.stats.nreject
    return c
end

astuple(c::Counts) = (c.nfe, c.steps, c.rejected)

"""Raise at once if fixed steps landing on every output time would exceed the cap (as pyjode does)."""
function check_fixed_budget(c::Counts, m::MethodSpec, ts, step_size)
    (m.adaptive || c.max_steps === nothing || !(step_size > 0)) && return nothing
    total = sum(i -> nsteps(ts[i - 1], ts[i], step_size), 2:length(ts); init = 0)
    total <= c.max_steps || throw(SolveFailure(
        "max_steps=$(c.max_steps) is too small: step_size=$step_size needs $total steps from " *
        "t=$(ts[1]) to t=$(ts[end]); raise max_steps or increase step_size"))
    return nothing
end

"""
    solve_span(f!, u0, ta, tb, m, counts; rtol, atol, step_size, norm, kwargs...)

Solve u' = f!(u, t) from `ta` to `tb` (either direction) and add its counts to `counts`. Fixed-step
methods take `nsteps(ta, tb, step_size)` equal steps; adaptive ones start with `step_size` when it is
positive (OrdinaryDiffEq's `dt` is the first step of an adaptive solve, and a positive `dt` is turned
to the direction of the span), else with OrdinaryDiffEq's own initial step. `maxiters`, which counts
attempted steps, is what is left of `counts.max_steps`. `norm` replaces the default error norm
(`internalnorm`). Throws `SolveFailure` unless the solve reaches `tb`.
"""
function solve_span(f!, u0, ta, tb, m::MethodSpec, counts::Counts; rtol, atol, step_size,
                    norm = nothing, kwargs...)
    prob = ODEProblem{true, FullSpecialize}(f!, u0, (ta, tb))
    opts = (; reltol = rtol, abstol = atol, kwargs...)
    if counts.max_steps !== nothing
        left = counts.max_steps - counts.steps - counts.rejected
        left > 0 || throw(SolveFailure(
            "max_steps=$(counts.max_steps) reached before t=$ta; raise max_steps, loosen rtol/atol, " *
            "or check whether the problem is stiff"))
        opts = (; opts..., maxiters = left)
    end
    if !m.adaptive
        step_size > 0 || throw(ArgumentError(
            "method=\"$(m.name)\" is a fixed-step method: pass step_size > 0"))
        opts = (; opts..., adaptive = false, dt = abs(tb - ta) / nsteps(ta, tb, step_size))
    elseif step_size > 0
        opts = (; opts..., dt = min(step_size, abs(tb - ta)))
    end
    if norm !== nothing
        opts = (; opts..., internalnorm = norm)
    end
    sol = solve(prob, m.alg; opts...)
    add!(counts, sol)
    check_success(sol, m, ta, tb, counts.max_steps)
    return sol
end

function check_success(sol, m::MethodSpec, ta, tb, max_steps)
    SciMLBase.successful_retcode(sol) && return nothing
    t = isempty(sol.t) ? ta : sol.t[end]
    code = string(sol.retcode)
    hint = if occursin("MaxIters", code)
        "max_steps=$max_steps reached; raise max_steps, loosen rtol/atol, or check whether the problem is stiff"
    elseif occursin("DtLessThanMin", code) || occursin("Unstable", code) || occursin("DtNaN", code)
        "the step size underflowed or the solution became NaN or inf; try looser rtol/atol, a different " *
        "method, float64, or check the vector field there"
    else
        "check the vector field and the tolerances"
    end
    throw(SolveFailure("method=\"$(m.name)\" stopped at t=$t while solving from t=$ta to t=$tb " *
                       "(retcode $code): $hint"))
end
