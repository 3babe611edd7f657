"""
    DenseForward

The forward solution kept for the quadrature adjoint's `state = "stored"` mode: `solution(d, i)` is the
OrdinaryDiffEq solution covering output interval `i` (from `ts[i]` to `ts[i+1]`), whose dense output
gives u(t) there.
"""
struct DenseForward
    sols::Vector{Any}
end

solution(d::DenseForward, i::Integer) = d.sols[min(i, length(d.sols))]

"""
    forward!(F, y0, ts, out; method, rtol, atol, step_size, max_steps, keep = false)
        -> (nfe, steps, rejected) or, with `keep`, (nfe, steps, rejected, ::DenseForward)

Solve u' = f(t, u), u(ts[1]) = y0 and write u(ts[i]) into column i of `reshape(out, n, length(ts))`
(a PyTorch `(len(ts), n)` row-major tensor). Adaptive methods take one solve and read the output
times off its dense output, so output times add no steps; fixed-step methods take equal steps landing
on every output time, as pyjode's PyTorch backend does. `step_size` is the first step of an adaptive
method; `max_steps` caps the attempted steps of the whole solve. `keep = true` also returns the dense
solution. Returns only once device work on `out` has finished.
"""
function forward!(F::AbstractField, y0, ts, out; method::AbstractString = "dopri5", rtol = 1e-7,
                  atol = 1e-9, step_size = 0.0, max_steps = nothing, keep::Bool = false)
    return synchronised(out) do
        m = method_spec(method)
        n, N = length(y0), length(ts)
        Y = reshape(out, n, N)
        copyto!(view(Y, :, 1), y0)
        f! = ForwardRHS(F)
        counts = Counts(m, max_steps)
        check_fixed_budget(counts, m, ts, step_size)
        sols = Any[]
        opts = (; rtol, atol, step_size)
        if m.adaptive
            sol = keep ? solve_span(f!, copy(y0), ts[1], ts[N], m, counts; opts...) :
                  solve_span(f!, copy(y0), ts[1], ts[N], m, counts; opts..., saveat = collect(ts))
            for i in 2:N
                if keep
                    sol(view(Y, :, i), ts[i])
                else
                    copyto!(view(Y, :, i), sol.u[i])
                end
            end
            push!(sols, sol)
        else
            u = copy(y0)
            for i in 2:N
                sol = solve_span(f!, u, ts[i - 1], ts[i], m, counts; opts..., save_everystep = keep)
                u = copy(sol.u[end])
                copyto!(view(Y, :, i), u)
                push!(sols, sol)
            end
        end
        keep ? (astuple(counts)..., DenseForward(sols)) : astuple(counts)
    end
end
