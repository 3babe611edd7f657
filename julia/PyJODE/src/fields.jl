# The one interface between the algorithms and a vector field f(t, u; θ).
#
# States are flat vectors. A field implements:
#
#   rhs!(F, du, u, t)                  du = f(t, u)
#   vjp_state!(F, du, ua, u, a, t)     du = f(t, u);  ua = aᵀ ∂f/∂u(t, u)
#   vjp_all!(F, du, ua, up, u, a, t)   as vjp_state!, and up = aᵀ ∂f/∂θ(t, u)
#   node_buffers(F)                    (U, A, T, W): n×K, n×K, K, K staging arrays
#   vjp_params!(F, gp, k)              gp = Σ_{j≤k} W[j] · A[:, j]ᵀ ∂f/∂θ(T[j], U[:, j])
#   nparams(F)                         length of θ
#   param_sizes(F)                     lengths of θ's tensors, in order (optional: one tensor by default)
#
# Parameter VJPs at several points (quadrature nodes, the stages of one Runge–Kutta step) go through
# `node_buffers` + `vjp_params!`, so a field backed by Python pays one crossing for all of them.

abstract type AbstractField end

function rhs! end
function vjp_state! end
function vjp_all! end
function vjp_params! end
function node_buffers end
function nparams end

"""
    param_sizes(F) -> collection of Int

How θ splits into tensors (PyTorch modules have one per weight and bias). The RMS error norm of the
backsolve adjoint measures each as its own part, as pyjode's PyTorch backend and torchdiffeq do. A field
whose θ is one tensor need not define it.
"""
param_sizes(F::AbstractField) = (nparams(F),)

"""Largest number of points one `vjp_params!` call can take."""
max_nodes(F::AbstractField) = length(node_buffers(F)[3])

function check_nodes(F::AbstractField, k::Integer)
    k <= max_nodes(F) || throw(ArgumentError(
        "this field stages at most $(max_nodes(F)) points per parameter VJP, $k were asked for; " *
        "build the field with more node buffers"))
    return nothing
end

# OrdinaryDiffEq calls these in-place right-hand sides.

"""`f!(du, u, p, t)` for the forward problem."""
struct ForwardRHS{F<:AbstractField}
    field::F
end
(r::ForwardRHS)(du, u, p, t) = (rhs!(r.field, du, u, t); nothing)

"""The adjoint system of `z = [u; a]`: u' = f(t, u), a' = -aᵀ ∂f/∂u (Pontryagin)."""
struct AdjointRHS{F<:AbstractField}
    field::F
    n::Int
end

function (r::AdjointRHS)(dz, z, p, t)
    n = r.n
    du = view(dz, 1:n)
    da = view(dz, (n + 1):(2n))
    vjp_state!(r.field, du, da, view(z, 1:n), view(z, (n + 1):(2n)), t)
    da .= .-da
    return nothing
end

"""The backsolve system of `z = [u; a; aθ]`: as `AdjointRHS`, plus aθ' = -aᵀ ∂f/∂θ."""
struct BacksolveRHS{F<:AbstractField}
    field::F
    n::Int
    p::Int
end

function (r::BacksolveRHS)(dz, z, p, t)
    n, m = r.n, r.p
    du = view(dz, 1:n)
    da = view(dz, (n + 1):(2n))
    dθ = view(dz, (2n + 1):(2n + m))
    vjp_all!(r.field, du, da, dθ, view(z, 1:n), view(z, (n + 1):(2n)), t)
    da .= .-da
    dθ .= .-dθ
    return nothing
end
