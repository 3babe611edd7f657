# Pure-Julia benchmark of PyJODE's gradient methods on a wide MLP vector field written in Julia.
#
#     julia --project=julia/PyJODE -e 'using Pkg; Pkg.instantiate()'   # once: installs the dependencies
#     julia --project=julia/PyJODE benchmarks/julia/bench_adjoints.jl [--quick]
#
# Prints a markdown table: median wall time of forward + gradient, and backward evaluations, for the
# quadrature adjoint, the backsolve adjoint with seminorm and with the RMS norm.
using PyJODE
using LinearAlgebra: mul!

struct MLPField <: AbstractField
    W1::Matrix{Float64}
    b1::Vector{Float64}
    W2::Matrix{Float64}
    b2::Vector{Float64}
    batch::Int
    U::Matrix{Float64}
    A::Matrix{Float64}
    T::Vector{Float64}
    W::Vector{Float64}
end

function MLPField(dim, width, batch; nodes = 8)
    n = dim * batch
    return MLPField(randn(width, dim) ./ sqrt(dim), zeros(width), randn(dim, width) ./ sqrt(width), zeros(dim),
                    batch, zeros(n, nodes), zeros(n, nodes), zeros(nodes), zeros(nodes))
end

dims(F::MLPField) = (size(F.W1, 2), F.batch)

function PyJODE.rhs!(F::MLPField, du, u, t)
    d, B = dims(F)
    H = tanh.(F.W1 * reshape(u, d, B) .+ F.b1)
    reshape(du, d, B) .= F.W2 * H .+ F.b2
    return nothing
end

function backprop(F::MLPField, u, a)
    d, B = dims(F)
    Y, Abar = reshape(u, d, B), reshape(a, d, B)
    H = tanh.(F.W1 * Y .+ F.b1)
    G = (F.W2' * Abar) .* (1 .- H .^ 2)
    return Y, Abar, H, G
end

function PyJODE.vjp_state!(F::MLPField, du, ua, u, a, t)
    Y, Abar, H, G = backprop(F, u, a)
    reshape(du, size(Y)) .= F.W2 * H .+ F.b2
    reshape(ua, size(Y)) .= F.W1' * G
    return nothing
end

function param_vjp!(gp, F::MLPField, Y, Abar, H, G, w)
    o = 0
    for (g, len) in ((G * Y', length(F.W1)), (vec(sum(G; dims = 2)), length(F.b1)),
                     (Abar * H', length(F.W2)), (vec(sum(Abar; dims = 2)), length(F.b2)))
        view(gp, (o + 1):(o + len)) .+= w .* vec(g)
        o += len
    end
    return gp
end

function PyJODE.vjp_all!(F::MLPField, du, ua, up, u, a, t)
    Y, Abar, H, G = backprop(F, u, a)
    reshape(du, size(Y)) .= F.W2 * H .+ F.b2
    reshape(ua, size(Y)) .= F.W1' * G
    fill!(up, 0)
    param_vjp!(up, F, Y, Abar, H, G, 1.0)
    return nothing
end

PyJODE.node_buffers(F::MLPField) = (F.U, F.A, F.T, F.W)
function PyJODE.vjp_params!(F::MLPField, gp, k)
    fill!(gp, 0)
    for j in 1:k
        Y, Abar, H, G = backprop(F, view(F.U, :, j), view(F.A, :, j))
        param_vjp!(gp, F, Y, Abar, H, G, F.W[j])
    end
    return nothing
end
PyJODE.nparams(F::MLPField) = length(F.W1) + length(F.b1) + length(F.W2) + length(F.b2)

function median_time(f, repeats)
    times = Float64[]
    for _ in 1:repeats
        push!(times, @elapsed f())
    end
    return sort(times)[cld(repeats, 2)]
end

function main(quick::Bool)
    dim, width, batch = 2, quick ? 256 : 1024, 4
    F = MLPField(dim, width, batch)
    n, P = dim * batch, PyJODE.nparams(F)
    ts = collect(range(0.0, 1.0; length = 5))
    y0 = randn(n)
    gys = randn(n * length(ts))
    out = zeros(n * length(ts))
    gy0, gθ = zeros(n), zeros(P)
    opts = (; method = "dopri5", rtol = 1e-6, atol = 1e-8)
    runs = Dict(
        "quadrature" => () -> (forward!(F, y0, ts, out; opts...);
                               quadrature_adjoint!(F, out, ts, gys, gy0, gθ; opts...)),
        "quadrature (stored)" => () -> begin
            r = forward!(F, y0, ts, out; opts..., keep = true)
            quadrature_adjoint!(F, out, ts, gys, gy0, gθ; opts..., forward = r[4])
        end,
        "backsolve, seminorm" => () -> (forward!(F, y0, ts, out; opts...);
                                        backsolve_adjoint!(F, out, ts, gys, gy0, gθ; opts..., norm = "seminorm")),
        "backsolve, rms" => () -> (forward!(F, y0, ts, out; opts...);
                                   backsolve_adjoint!(F, out, ts, gys, gy0, gθ; opts..., norm = "rms")),
    )
    println("| gradient (dopri5, width $width, $P parameters) | median s | backward NFE |")
    println("|---|---|---|")
    for name in ("quadrature", "quadrature (stored)", "backsolve, seminorm", "backsolve, rms")
        counts = runs[name]()  # compiles, and gives the counts
        t = median_time(runs[name], quick ? 3 : 7)
        println("| $name | $(round(t; sigdigits = 3)) | $(counts[1]) |")
    end
end

main("--quick" in ARGS)
