"""
    PyJODE

Neural-ODE integration and gradients on OrdinaryDiffEq, for vector fields that live anywhere:

- a forward solve with dense output (`forward!`);
- the Gauss–Legendre quadrature adjoint (`quadrature_adjoint!`, Norcliffe & Deisenroth 2023);
- the continuous backsolve adjoint with seminorm step control (`backsolve_adjoint!`,
  Kidger, Chen & Lyons 2021);
- McCallum–Foster algebraically reversible Runge–Kutta with its exact backward pass
  (`reversible_forward!`, `reversible_adjoint!`).

Every algorithm talks to the vector field only through the `AbstractField` interface (`fields.jl`).
`PyField` implements it with callbacks into a PyTorch module (the Python package `pyjode`);
Julia users implement it directly (see `test/runtests.jl`).
"""
module PyJODE

using LinearAlgebra: LinearAlgebra
using SciMLBase: SciMLBase, ODEProblem, FullSpecialize, solve
using OrdinaryDiffEqLowOrderRK: Euler, Midpoint, Heun, RK4, BS3, DP5
using OrdinaryDiffEqTsit5: Tsit5
using FastGaussQuadrature: gausslegendre
using PythonCall: Py, pydel!
using DLPack: DLPack

# Bumped whenever a function called from Python changes its signature.
const API_VERSION = 1

export AbstractField, rhs!, vjp_state!, vjp_all!, vjp_params!, node_buffers, nparams
export PartsNorm, seminorm, Tableau, tableau
export forward!, quadrature_adjoint!, backsolve_adjoint!, reversible_forward!, reversible_adjoint!

include("fields.jl")
include("pyfield.jl")
include("norms.jl")
include("methods.jl")
include("forward.jl")
include("quadrature.jl")
include("backsolve.jl")
include("tableaus.jl")
include("reversible.jl")

end # module
