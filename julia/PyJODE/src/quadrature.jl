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
Gauss–Legendre nodes waiting in the field's node buffers for one batched `vjp_params!` call. Nodes of
several backward steps (and intervals) share a call, as the PyTorch backend batches them, so a field
backed by Python pays one crossing per `max_nodes(F)` nodes instead of one per step.
"""
mutable struct NodeStage{F<:AbstractField,V}
    field::F
    gθ::V
    gp::V
    staged::Int
end

function flush!(S::NodeStage)
    S.staged == 0 && return S
    vjp_params!(S.field, S.gp, S.staged)
    S.gθ .+= S.gp
    S.staged = 0
    return S
end

"""The next `k` free node columns, flushing first when fewer than `k` are left."""
function reserve!(S::NodeStage, k::Integer)
    S.staged + k > max_nodes(S.field) && flush!(S)
    first = S.staged + 1
    S.staged += k
    return first:(first + k - 1)
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
no seminorm): on every accepted backward step, `nodes` Gauss–Legendre points (`default_nodes(m)` when
`nodes = 0`) are read off the dense outputs and staged for a batched `vjp_params!` call, which takes
as many nodes as the field's buffers hold. Writes gy0 = a(ts[1]) and gθ; returns once device work on
them has finished.
"""
function quadrature_adjoint!(F::AbstractField, ys, ts, gys, gy0, gθ; method::AbstractString = "dopri5",
                             rtol = 1e-7, atol = 1e-9, step_size = 0.0, max_steps = nothing,
                             nodes::Integer = 0, forward = nothing)
    return synchronised(gθ) do
        m = method_spec(method)
        n, N = length(gy0), length(ts)
        Y = reshape(ys, n, N)
        G = reshape(gys, n, N)
        K = nodes > 0 ? Int(nodes) : default_nodes(m)
        check_nodes(F, K)
        x, w = gausslegendre(K)
        U, A, T, W = node_buffers(F)
        stored = forward !== nothing
        state = stored ? similar(gy0, n) : similar(gy0, 2n)
        a = stored ? state : view(state, (n + 1):(2n))
        zk = similar(state)
        fill!(gθ, 0)
        stage = NodeStage(F, gθ, similar(gθ), 0)
        copyto!(a, view(G, :, N))
        counts = Counts(m, max_steps)
        for i in N:-1:2
            if stored
                fwd = solution(forward, i - 1)
                rhs = StoredAdjointRHS(F, fwd, similar(gy0), similar(gy0))
                errnorm = nothing
            else
                copyto!(view(state, 1:n), view(Y, :, i))
                rhs = AdjointRHS(F, n)
                errnorm = PartsNorm(n, 2)
            end
            sol = solve_span(rhs, copy(state), ts[i], ts[i - 1], m, counts; rtol, atol, step_size,
                             norm = errnorm)
            for s in 1:(length(sol.t) - 1)
                ta, tb = sol.t[s], sol.t[s + 1]
                half = (tb - ta) / 2
                mid = (ta + tb) / 2
                cols = reserve!(stage, K)
                for (k, c) in enumerate(cols)
                    τ = mid + half * x[k]
                    sol(zk, τ)
                    if stored
                        fwd(view(U, :, c), τ)
                        copyto!(view(A, :, c), zk)
                    else
                        copyto!(view(U, :, c), view(zk, 1:n))
                        copyto!(view(A, :, c), view(zk, (n + 1):(2n)))
                    end
                    T[c] = τ
                    # The solve runs from ta to tb, so this step contributes ∫_{tb}^{ta} = -∫_{ta}^{tb}.
                    W[c] = -half * w[k]
                end
                counts.nfe += K
            end
            copyto!(state, sol.u[end])
            a .+= view(G, :, i - 1)
        end
        flush!(stage)
        copyto!(gy0, a)
        release!(state, zk, stage.gp)
        astuple(counts)
    end
end
