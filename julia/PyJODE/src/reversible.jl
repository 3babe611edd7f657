# McCallum & Foster, "Efficient, Accurate and Stable Gradients for Neural ODEs" (arXiv 2410.11648):
# any explicit Runge–Kutta step Φ_h(t, x) = x + Ψ_h(t, x) made algebraically reversible by carrying a
# second state z with a coupling λ ∈ (0, 1]. OrdinaryDiffEq has no such solver, so the base steps are
# written here against the `AbstractField` interface.

"""Stage storage for one base step and its VJP (n × s each)."""
struct StepWork{M,V}
    Ystage::M   # stage inputs
    Kstage::M   # stage derivatives
    Ybar::M     # cotangents of the stage inputs
    kbar::V
    junk::V
    gp::V
end

function StepWork(u::AbstractVector, s::Integer, p::Integer)
    n = length(u)
    return StepWork(similar(u, n, s), similar(u, n, s), similar(u, n, s), similar(u), similar(u),
                    similar(u, p))
end

release_one!(W::StepWork) = release!(W.Ystage, W.Kstage, W.Ybar, W.kbar, W.junk, W.gp)

"""
    rk_step!(out, F, tab, W, t, h, x)

out = Φ_h(t, x) = x + h Σ_i b_i k_i with k_i = f(t + c_i h, x + h Σ_{j<i} a_ij k_j); the stage inputs
and derivatives stay in `W` for `rk_step_vjp!`.
"""
function rk_step!(out, F::AbstractField, tab::Tableau, W::StepWork, t, h, x)
    for i in 1:stages(tab)
        Yi = view(W.Ystage, :, i)
        copyto!(Yi, x)
        for j in 1:(i - 1)
            aij = tab.a[i, j]
            iszero(aij) || (Yi .+= (h * aij) .* view(W.Kstage, :, j))
        end
        rhs!(F, view(W.Kstage, :, i), Yi, t + tab.c[i] * h)
    end
    copyto!(out, x)
    for i in 1:stages(tab)
        iszero(tab.b[i]) || (out .+= (h * tab.b[i]) .* view(W.Kstage, :, i))
    end
    return out
end

"""
    rk_step_vjp!(xbar, gθ, sign, F, tab, W, t, h, x, v, out)

Reverse mode through one base step, given the cotangent `v` of `out = Φ_h(t, x)` (also computed):

    k̄_i = h b_i v + h Σ_{j>i} a_ji Ȳ_j,   Ȳ_i = (∂f/∂u(Y_i))ᵀ k̄_i,   x̄ = v + Σ_i Ȳ_i,
    θ̄  += sign · Σ_i (∂f/∂θ(Y_i))ᵀ k̄_i,

one `vjp_state!` per stage, last stage first, and one batched `vjp_params!` over all stages.
"""
function rk_step_vjp!(xbar, gθ, sign, F::AbstractField, tab::Tableau, W::StepWork, t, h, x, v, out)
    rk_step!(out, F, tab, W, t, h, x)
    s = stages(tab)
    check_nodes(F, s)
    U, A, T, Wt = node_buffers(F)
    copyto!(xbar, v)
    for i in s:-1:1
        W.kbar .= (h * tab.b[i]) .* v
        for j in (i + 1):s
            aji = tab.a[j, i]
            iszero(aji) || (W.kbar .+= (h * aji) .* view(W.Ybar, :, j))
        end
        ti = t + tab.c[i] * h
        copyto!(view(U, :, i), view(W.Ystage, :, i))
        copyto!(view(A, :, i), W.kbar)
        T[i] = ti
        Wt[i] = sign
        vjp_state!(F, W.junk, view(W.Ybar, :, i), view(W.Ystage, :, i), W.kbar, ti)
        xbar .+= view(W.Ybar, :, i)
    end
    vjp_params!(F, W.gp, s)
    gθ .+= W.gp
    return xbar
end

"""The substeps pyjode takes on [ta, tb]: `m` equal steps of `h`, the last one ending exactly at `tb`."""
function substep(ta, tb, m, j)
    h = (tb - ta) / m
    t = ta + j * h
    return t, (j == m - 1 ? tb : t + h), h
end

function check_coupling(λ)
    0 < λ <= 1 || throw(ArgumentError("coupling=$λ must lie in (0, 1]; 0.999 is the usual choice"))
    return nothing
end

"""
    reversible_forward!(F, y0, ts, out, zout; tableau, step_size, coupling = 0.999)
        -> (nfe, steps, rejected)

With z₀ = y₀, each step of size h from t to t' = t + h is (McCallum & Foster, §3, eq. for the
reversible step)

    y' = λ (y - z) + Φ_h(t, z),     z' = z + y' - Φ_{-h}(t', y').

Writes y at every output time into `out` (`(len(ts), n)` row-major) and the final z into `zout`, which
`reversible_adjoint!` needs to run the recursion backwards.
"""
function reversible_forward!(F::AbstractField, y0, ts, out, zout; tableau::Tableau, step_size,
                             coupling = 0.999)
    return synchronised(out) do
        check_coupling(coupling)
        step_size > 0 || throw(ArgumentError("the reversible solver takes fixed steps: pass step_size > 0"))
        λ = coupling
        n, N = length(y0), length(ts)
        Y = reshape(out, n, N)
        copyto!(view(Y, :, 1), y0)
        y, z, Φ = copy(y0), copy(y0), similar(y0)
        W = StepWork(y0, stages(tableau), nparams(F))
        nsteps_total = 0
        for i in 2:N
            m = nsteps(ts[i - 1], ts[i], step_size)
            for j in 0:(m - 1)
                t, t1, h = substep(ts[i - 1], ts[i], m, j)
                rk_step!(Φ, F, tableau, W, t, h, z)
                y .= λ .* (y .- z) .+ Φ
                rk_step!(Φ, F, tableau, W, t1, -h, y)
                z .= z .+ y .- Φ
            end
            nsteps_total += m
            copyto!(view(Y, :, i), y)
        end
        copyto!(zout, z)
        release!(y, z, Φ, W)
        if !all(isfinite, out)
            throw(SolveFailure("the reversible solve became NaN or inf with step_size=$step_size; try a " *
                               "smaller step_size, a smaller coupling, or float64"))
        end
        (2 * stages(tableau) * nsteps_total, nsteps_total, 0)
    end
end

"""
    reversible_adjoint!(F, ys, zN, ts, gys, gy0, gθ; tableau, step_size, coupling = 0.999)
        -> (nfe, steps, rejected)

The exact gradient of `reversible_forward!`'s discrete solution in O(1) memory (McCallum & Foster,
§3, backward pass). From (y_N, z_N) and cotangents (ȳ, z̄) = (gys[N], 0), each step back from t' to t:

1. s₁ = Φ_{-h}(t', y) with its VJP against z̄; z ← z - y + s₁; ȳ += z̄ - (∂Φ_{-h}/∂y)ᵀ z̄; θ̄ -= (∂Φ_{-h}/∂θ)ᵀ z̄.
2. s₂ = Φ_h(t, z) with its VJP against ȳ; y ← (y - s₂)/λ + z;
   z̄ ← z̄ - λ ȳ + (∂Φ_h/∂z)ᵀ ȳ; θ̄ += (∂Φ_h/∂θ)ᵀ ȳ; ȳ ← λ ȳ.

At an output time ȳ gains that output's cotangent; finally dL/dy₀ = ȳ + z̄ (z₀ = y₀).
"""
function reversible_adjoint!(F::AbstractField, ys, zN, ts, gys, gy0, gθ; tableau::Tableau, step_size,
                             coupling = 0.999)
    return synchronised(gθ) do
        check_coupling(coupling)
        λ = coupling
        n, N = length(gy0), length(ts)
        Y = reshape(ys, n, N)
        G = reshape(gys, n, N)
        y, z = copy(view(Y, :, N)), copy(zN)
        ybar, zbar = copy(view(G, :, N)), zero(gy0)
        s1, s2, xbar = similar(gy0), similar(gy0), similar(gy0)
        W = StepWork(gy0, stages(tableau), nparams(F))
        fill!(gθ, 0)
        nsteps_total = 0
        for i in N:-1:2
            m = nsteps(ts[i - 1], ts[i], step_size)
            for j in (m - 1):-1:0
                t, t1, h = substep(ts[i - 1], ts[i], m, j)
                rk_step_vjp!(xbar, gθ, -1, F, tableau, W, t1, -h, y, zbar, s1)
                z .= z .- y .+ s1
                ybar .+= zbar .- xbar
                rk_step_vjp!(xbar, gθ, 1, F, tableau, W, t, h, z, ybar, s2)
                y .= (y .- s2) ./ λ .+ z
                zbar .= zbar .- λ .* ybar .+ xbar
                ybar .*= λ
            end
            nsteps_total += m
            ybar .+= view(G, :, i - 1)
        end
        gy0 .= ybar .+ zbar
        release!(y, z, ybar, zbar, s1, s2, xbar, W)
        (6 * stages(tableau) * nsteps_total, nsteps_total, 0)
    end
end
