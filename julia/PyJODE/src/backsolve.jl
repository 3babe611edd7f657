"""
    backsolve_adjoint!(F, ys, ts, gys, gy0, gθ; method, rtol, atol, step_size, max_steps, norm)
        -> (nfe, steps, rejected)

Continuous backsolve adjoint (Chen et al. 2018) with seminorm step control (Kidger, Chen & Lyons,
ICML 2021, §3). Per output interval, right to left, solve `z = [u; a; aθ]`,

    u' = f(t, u),   a' = -aᵀ ∂f/∂u,   aθ' = -aᵀ ∂f/∂θ,

from `ts[i]` (restarting `u` at the forward output `ys[i]`) to `ts[i-1]`, then add `gys[i-1]` to `a`.
One `vjp_all!` per evaluation gives all three. `norm = "seminorm"` leaves `aθ` out of step control;
`norm = "rms"` measures it too, one part per parameter tensor (`param_sizes(F)`), as pyjode's PyTorch
backend does. Writes gy0 = a(ts[1]) and gθ = aθ(ts[1]); returns once device work on them has finished.
"""
function backsolve_adjoint!(F::AbstractField, ys, ts, gys, gy0, gθ; method::AbstractString = "dopri5",
                            rtol = 1e-7, atol = 1e-9, step_size = 0.0, max_steps = nothing,
                            norm::AbstractString = "seminorm")
    return synchronised(gθ) do
        m = method_spec(method)
        n, N, P = length(gy0), length(ts), nparams(F)
        errnorm = if norm == "seminorm"
            seminorm(n, P)
        elseif norm == "rms"
            fullnorm(n, param_sizes(F))
        else
            throw(ArgumentError("norm=\"$norm\" is not known; choose \"seminorm\" or \"rms\""))
        end
        Y = reshape(ys, n, N)
        G = reshape(gys, n, N)
        z = similar(gy0, 2n + P)
        fill!(z, 0)
        a = view(z, (n + 1):(2n))
        copyto!(a, view(G, :, N))
        rhs = BacksolveRHS(F, n, P)
        counts = Counts(m, max_steps)
        for i in N:-1:2
            copyto!(view(z, 1:n), view(Y, :, i))
            sol = solve_span(rhs, copy(z), ts[i], ts[i - 1], m, counts; rtol, atol, step_size,
                             norm = errnorm, save_everystep = false)
            copyto!(z, sol.u[end])
            a .+= view(G, :, i - 1)
        end
        copyto!(gy0, a)
        copyto!(gθ, view(z, (2n + 1):(2n + P)))
        release!(z)
        astuple(counts)
    end
end
