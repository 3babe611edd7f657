"""The adjoint a' = -aᵀ ∂f/∂u(t, u(t)) alone, with u(t) read from the stored forward solution."""
struct StoredAdjointRHS{F<:AbstractField,S,V}
    field::F
    forward::S
    u::V
    junk::V
end

function (r::StoredAdjointRHS)(da, a, p, t)
    r.forward(r.u, t)
    vjp_state!(r.field, r.junk, da, r.u, a, t)
    da .= .-da
    return nothing
end

"""
    quadrature_adjoint!(F, ys, ts, gys, gy0, gθ; method, rtol, atol, step_size, max_steps, nodes,
                        forward = nothing) -> (nfe, steps, rejected)

Gauss–Legendre quadrature adjoint (Norcliffe & Deisenroth, TMLR 2023, §3), with nodes on every
accepted backward step as in pyjode's PyTorch backend and SciMLSensitivity's `GaussAdjoint`.

Per output interval, right to left, solve for the adjoint a' = -aᵀ ∂f/∂u from `ts[i]` to `ts[i-1]`,
then add `gys[i-1]` to `a`. The state u(t) comes from

- `forward` (a `DenseForward` from `forward!(…; keep = true)`): the stored forward solution; the
  backward state is `a` alone;
- or, when `forward === nothing`, re-solving u' = f backwards with `a` (state `[u; a]`, restarted at
  the forward output `ys[i]` on each interval), as the paper does: O(1) memory.

The parameter gradient dL/dθ = ∫ aᵀ ∂f/∂θ dt never enters the backward state (so step control needs
no seminorm): on every accepted backward step, `nodes` Gauss–Legendre points (default ⌈(order+1)/2⌉)
are read off the dense outputs and batched into one `vjp_params!` call. Writes gy0 = a(ts[1]) and gθ.
"""
function quadrature_adjoint!(F::AbstractField, ys, ts, gys, gy0, gθ; method::AbstractString = "dopri5",
                             rtol = 1e-7, atol = 1e-9, step_size = 0.0, max_steps::Integer = 100_000,
                             nodes::Integer = 0, forward = nothing)
    m = method_spec(method)
    n, N = length(gy0), length(ts)
    Y = reshape(ys, n, N)
    G = reshape(gys, n, N)
    K = nodes > 0 ? nodes : cld(m.order + 1, 2)
    check_nodes(F, K)
    x, w = gausslegendre(K)
    U, A, T, W = node_buffers(F)
    stored = forward !== nothing
    state = stored ? similar(gy0, n) : similar(gy0, 2n)
    a = stored ? state : view(state, (n + 1):(2n))
    zk = similar(state)
    gp = similar(gθ)
    copyto!(a, view(G, :, N))
    fill!(gθ, 0)
    counts = Counts()
    for i in N:-1:2
        if stored
            fwd = solution(forward, i - 1)
            rhs = StoredAdjointRHS(F, fwd, similar(gy0), similar(gy0))
            errnorm = nothing
        else
            copyto!(view(state, 1:n), view(Y, :, i))
            rhs = AdjointRHS(F, n)
            errnorm = PartsNorm((1:n, (n + 1):(2n)))
        end
        sol = solve_span(rhs, copy(state), ts[i], ts[i - 1], m; rtol, atol, step_size, max_steps,
                         norm = errnorm)
        add!(counts, sol)
        for s in 1:(length(sol.t) - 1)
            ta, tb = sol.t[s], sol.t[s + 1]
            half = (tb - ta) / 2
            mid = (ta + tb) / 2
            for k in 1:K
                τ = mid + half * x[k]
                sol(zk, τ)
                if stored
                    fwd(view(U, :, k), τ)
                    copyto!(view(A, :, k), zk)
                else
                    copyto!(view(U, :, k), view(zk, 1:n))
                    copyto!(view(A, :, k), view(zk, (n + 1):(2n)))
                end
                T[k] = τ
                # The solve runs from ta to tb, so this step contributes ∫_{tb}^{ta} = -∫_{ta}^{tb}.
                W[k] = -half * w[k]
            end
            vjp_params!(F, gp, K)
            gθ .+= gp
            counts.nfe += K
        end
        copyto!(state, sol.u[end])
        a .+= view(G, :, i - 1)
    end
    copyto!(gy0, a)
    return astuple(counts)
end
