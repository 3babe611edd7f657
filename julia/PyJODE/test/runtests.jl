# Pure-Julia tests: a linear field f(t, u) = M u with θ = vec(M), whose solution exp(M t) u₀ and whose
# gradients (through the Fréchet derivative of the matrix exponential) are known exactly.
using PyJODE
using LinearAlgebra: I, norm
using Test

struct LinearField <: AbstractField
    M::Matrix{Float64}
    U::Matrix{Float64}
    A::Matrix{Float64}
    T::Vector{Float64}
    W::Vector{Float64}
end
LinearField(M; nodes = 8) = LinearField(M, zeros(size(M, 1), nodes), zeros(size(M, 1), nodes),
                                        zeros(nodes), zeros(nodes))

PyJODE.rhs!(F::LinearField, du, u, t) = (du .= F.M * u; nothing)
PyJODE.vjp_state!(F::LinearField, du, ua, u, a, t) = (du .= F.M * u; ua .= F.M' * a; nothing)
function PyJODE.vjp_all!(F::LinearField, du, ua, up, u, a, t)
    PyJODE.vjp_state!(F, du, ua, u, a, t)
    up .= vec(a * u')
    return nothing
end
PyJODE.node_buffers(F::LinearField) = (F.U, F.A, F.T, F.W)
function PyJODE.vjp_params!(F::LinearField, gp, k)
    gp .= 0
    for j in 1:k
        gp .+= F.W[j] .* vec(F.A[:, j] * F.U[:, j]')
    end
    return nothing
end
PyJODE.nparams(F::LinearField) = length(F.M)

const M0 = [-0.4 1.0 0.2; -0.9 -0.3 0.5; 0.1 -0.6 -0.2]
const Y0 = [1.0, -0.5, 0.25]
const TS = [0.0, 0.3, 0.8, 1.5]
const GYS = [0.0 0.0 0.0; 0.7 -0.2 0.4; -0.3 0.5 0.1; 0.2 0.3 -0.6]'  # column i: dL/dy(ts[i])

"""Exact loss gradients for L = Σ_i gᵢᵀ exp(M tᵢ) y₀ (block-matrix Fréchet derivative of exp)."""
function exact_gradients(M, y0, ts, G)
    n = size(M, 1)
    gy0 = sum(exp(M * t)' * G[:, i] for (i, t) in enumerate(ts))
    gM = zeros(n, n)
    for k in 1:n, l in 1:n
        E = zeros(n, n)
        E[k, l] = 1.0
        for (i, t) in enumerate(ts)
            B = exp([M*t E*t; zeros(n, n) M*t])
            gM[k, l] += G[:, i]' * B[1:n, (n + 1):(2n)] * y0
        end
    end
    return gy0, vec(gM)
end

relerr(a, b) = norm(a - b) / norm(b)

@testset "PyJODE" begin
    F = LinearField(M0)
    exact_ys = hcat((exp(M0 * t) * Y0 for t in TS)...)
    gy0_exact, gθ_exact = exact_gradients(M0, Y0, TS, GYS)

    @testset "forward $(method)" for method in ("dopri5", "tsit5", "bosh3")
        out = zeros(3 * length(TS))
        nfe, steps, _ = forward!(F, Y0, TS, out; method, rtol = 1e-10, atol = 1e-12)
        @test relerr(reshape(out, 3, :), exact_ys) < 1e-8
        @test nfe > steps > 0
    end

    @testset "fixed-step rk4 converges at order 4" begin
        errs = map((0.1, 0.05)) do h
            out = zeros(3 * length(TS))
            forward!(F, Y0, TS, out; method = "rk4", step_size = h)
            norm(reshape(out, 3, :) - exact_ys)
        end
        @test 12 < errs[1] / errs[2] < 20
    end

    @testset "quadrature adjoint ($(method), stored = $(stored))" for method in ("dopri5", "tsit5"),
                                                                       stored in (false, true)
        gy0, gθ = zeros(3), zeros(9)
        out = zeros(3 * length(TS))
        r = forward!(F, Y0, TS, out; method, rtol = 1e-10, atol = 1e-12, keep = stored)
        @test relerr(reshape(out, 3, :), exact_ys) < 1e-8
        quadrature_adjoint!(F, out, TS, vec(GYS), gy0, gθ; method, rtol = 1e-10, atol = 1e-12,
                            forward = stored ? r[4] : nothing)
        @test relerr(gy0, gy0_exact) < 1e-7
        @test relerr(gθ, gθ_exact) < 1e-7
    end

    @testset "backsolve adjoint, seminorm and rms" begin
        out = zeros(3 * length(TS))
        forward!(F, Y0, TS, out; method = "dopri5", rtol = 1e-10, atol = 1e-12)
        steps = Dict{String,Int}()
        for nrm in ("seminorm", "rms")
            gy0, gθ = zeros(3), zeros(9)
            _, steps[nrm], _ = backsolve_adjoint!(F, out, TS, vec(GYS), gy0, gθ; method = "dopri5",
                                                  rtol = 1e-10, atol = 1e-12, norm = nrm)
            @test relerr(gy0, gy0_exact) < 1e-7
            @test relerr(gθ, gθ_exact) < 1e-7
        end
        @test steps["seminorm"] <= steps["rms"]
    end

    @testset "seminorm ignores the parameter channel" begin
        nrm = seminorm(2, 3)
        u = [1.0, 2.0, 3.0, 4.0, 1e6, 1e6, 1e6]
        @test nrm(u, 0.0) ≈ max(sqrt((1 + 4) / 2), sqrt((9 + 16) / 2))
        @test nrm(-2.0, 0.0) == 2.0
    end

    @testset "rms norm: one part per parameter tensor" begin
        nrm = PyJODE.fullnorm(2, (3, 1))
        u = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 10.0]
        @test nrm(u, 0.0) ≈ 10.0  # not sqrt((3 + 100) / 4): the two tensors are measured apart
        @test PyJODE.fullnorm(2, (0, 2))([1.0, 1.0, 2.0, 2.0, 3.0, 3.0], 0.0) ≈ 3.0
        @test PartsNorm(2, 2)([3.0, 4.0, 0.0, 1.0], 0.0) ≈ sqrt(12.5)
    end

    @testset "default quadrature nodes follow the step control's order" begin
        # As pyjode.adjoints.quadrature.default_nodes_per_step: ceil(q / 2).
        @test [PyJODE.default_nodes(PyJODE.method_spec(m)) for m in ("euler", "midpoint", "rk4", "bosh3", "dopri5", "tsit5")] ==
              [1, 1, 2, 1, 2, 2]
    end

    @testset "quadrature nodes batched across steps give the same gradient" begin
        out = zeros(3 * length(TS))
        forward!(F, Y0, TS, out; method = "dopri5", rtol = 1e-10, atol = 1e-12)
        grads = map((2, 3, 8)) do capacity  # nodes one vjp_params! call can take; 3 nodes per step
            g0, gp = zeros(3), zeros(9)
            quadrature_adjoint!(LinearField(M0; nodes = capacity), out, TS, vec(GYS), g0, gp;
                                method = "dopri5", rtol = 1e-10, atol = 1e-12, nodes = min(capacity, 3))
            gp
        end
        @test relerr(grads[3], grads[2]) < 1e-13
        @test relerr(grads[1], gθ_exact) < 1e-6
    end

    @testset "reversible $(name)" for name in ("midpoint", "rk4", "dopri5")
        tab = tableau(name)
        h, λ = 0.05, 0.999
        # A closure that assigned `out, zN` would rebind the testset's own `out, zN` below (Julia's
        # closures capture enclosing locals by reference), so its results get other names.
        solve_rev(M, y0) = begin
            ys_rev, z_rev = zeros(3 * length(TS)), zeros(3)
            reversible_forward!(LinearField(M), y0, TS, ys_rev, z_rev; tableau = tab, step_size = h,
                                coupling = λ)
            ys_rev, z_rev
        end
        out, zN = solve_rev(M0, Y0)
        # Global error of the base method at h = 0.05 (midpoint 3e-4, rk4 5e-8, dopri5 1e-10 in pyjode's
        # PyTorch backend on this problem).
        @test relerr(reshape(out, 3, :), exact_ys) < Dict("midpoint" => 1e-3, "rk4" => 1e-6, "dopri5" => 1e-8)[name]
        loss(M, y0) = sum(reshape(solve_rev(M, y0)[1], 3, :) .* GYS)
        gy0, gθ = zeros(3), zeros(9)
        reversible_adjoint!(F, out, zN, TS, vec(GYS), gy0, gθ; tableau = tab, step_size = h, coupling = λ)
        # The discrete map is linear in y0, so its gradient is exact to rounding.
        J = hcat((solve_rev(M0, Y0 + e)[1] - out for e in eachcol(Matrix(1.0I, 3, 3)))...)
        @test relerr(gy0, J' * vec(GYS)) < 1e-9
        ϵ = 1e-6
        fd = map(1:9) do k
            E = zeros(9)
            E[k] = ϵ
            (loss(M0 + reshape(E, 3, 3), Y0) - loss(M0 - reshape(E, 3, 3), Y0)) / (2ϵ)
        end
        @test relerr(gθ, fd) < 1e-7
    end

    @testset "errors" begin
        @test_throws ArgumentError PyJODE.method_spec("rk45")
        out = zeros(3 * length(TS))
        @test_throws ArgumentError forward!(F, Y0, TS, out; method = "rk4")
        @test_throws PyJODE.SolveFailure forward!(F, Y0, TS, out; method = "dopri5", max_steps = 2)
        # max_steps caps the whole solve (15 fixed steps here), not each output interval.
        @test_throws PyJODE.SolveFailure forward!(F, Y0, TS, out; method = "rk4", step_size = 0.1, max_steps = 10)
        @test forward!(F, Y0, TS, out; method = "rk4", step_size = 0.1, max_steps = 20)[2] >= 15
        @test_throws ArgumentError reversible_forward!(F, Y0, TS, out, zeros(3); tableau = tableau("rk4"),
                                                       step_size = 0.1, coupling = 1.5)
    end
end
