# Method names shared with pyjode's PyTorch backend, mapped onto OrdinaryDiffEq algorithms, and the one
# place where this package calls `solve`.

struct Method{A}
    name::String
    alg::A
    order::Int
    adaptive::Bool
end

const METHOD_NAMES = ("euler", "midpoint", "heun", "rk4", "bosh3", "dopri5", "tsit5")

"""
    method_spec(name) -> Method

`euler`, `midpoint`, `heun`, `rk4` are fixed-step (they need `step_size`); `bosh3` (BS3), `dopri5` (DP5)
and `tsit5` (Tsit5) are adaptive.
"""
function method_spec(name::AbstractString)
    name == "euler" && return Method("euler", Euler(), 1, false)
    name == "midpoint" && return Method("midpoint", Midpoint(), 2, false)
    name == "heun" && return Method("heun", Heun(), 2, false)
    name == "rk4" && return Method("rk4", RK4(), 4, false)
    name == "bosh3" && return Method("bosh3", BS3(), 3, true)
    name == "dopri5" && return Method("dopri5", DP5(), 5, true)
    name == "tsit5" && return Method("tsit5", Tsit5(), 5, true)
    throw(ArgumentError("method=\"$name\" is not available in PyJODE; choose one of " *
                        join(METHOD_NAMES, ", ")))
end

"""Raised when a solve stops early; the message says where and what to try."""
struct SolveFailure <: Exception
    msg::String
end
Base.showerror(io::IO, e::SolveFailure) = print(io, e.msg)

"""Fixed steps per output interval, as pyjode's PyTorch backend takes them: equal steps landing on `tb`."""
nsteps(ta, tb, step_size) = max(1, ceil(Int, abs(tb - ta) / step_size - 1e-9))

"""Evaluations, accepted steps and rejected steps of a solve."""
mutable struct Counts
    nfe::Int
    steps::Int
    rejected::Int
end
Counts() = Counts(0, 0, 0)

function add!(c::Counts, sol)
    c.nfe += sol.stats.nf
    c.steps += sol.stats.naccept
    c.rejected += sol.stats.nreject
    return c
end

astuple(c::Counts) = (c.nfe, c.steps, c.rejected)

"""
    solve_span(f!, u0, ta, tb, m; rtol, atol, step_size, max_steps, norm, kwargs...)

Solve u' = f!(u, t) from `ta` to `tb` (either direction). Fixed-step methods take
`nsteps(ta, tb, step_size)` equal steps. `norm` replaces the default error norm (`internalnorm`).
Throws `SolveFailure` unless the solve reaches `tb`.
"""
function solve_span(f!, u0, ta, tb, m::Method; rtol, atol, step_size, max_steps,
                    norm = nothing, kwargs...)
    prob = ODEProblem{true, FullSpecialize}(f!, u0, (ta, tb))
    opts = (; reltol = rtol, abstol = atol, maxiters = max_steps, kwargs...)
    if !m.adaptive
        step_size > 0 || throw(ArgumentError(
            "method=\"$(m.name)\" is a fixed-step method: pass step_size > 0"))
        opts = (; opts..., adaptive = false, dt = abs(tb - ta) / nsteps(ta, tb, step_size))
    end
    if norm !== nothing
        opts = (; opts..., internalnorm = norm)
    end
    sol = solve(prob, m.alg; opts...)
    check_success(sol, m, ta, tb, max_steps)
    return sol
end

function check_success(sol, m::Method, ta, tb, max_steps)
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
