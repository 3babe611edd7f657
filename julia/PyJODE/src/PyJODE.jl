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
`using PyJODE` is pure Julia: Julia users implement that interface directly (see `test/runtests.jl`).
The bridge to PyTorch (`PyField`, DLPack views of Python tensors) is the package extension
`PyJODEPythonCallExt`, loaded only when PythonCall and DLPack are loaded too, as the Python package
`pyjode` does.
"""
module PyJODE

using LinearAlgebra: LinearAlgebra
using SciMLBase: SciMLBase, ODEProblem, FullSpecialize, solve
using OrdinaryDiffEqLowOrderRK: Euler, Midpoint, Heun, RK4, BS3, DP5
using OrdinaryDiffEqTsit5: Tsit5
using FastGaussQuadrature: gausslegendre

# Bumped whenever a function called from Python changes its signature.
const API_VERSION = 2

export AbstractField, rhs!, vjp_state!, vjp_all!, vjp_params!, node_buffers, nparams, param_sizes
export PartsNorm, seminorm, Tableau, tableau
export forward!, quadrature_adjoint!, backsolve_adjoint!, reversible_forward!, reversible_adjoint!

include("fields.jl")
include("device.jl")
include("norms.jl")
include("methods.jl")
include("forward.jl")
include("quadrature.jl")
include("backsolve.jl")
include("tableaus.jl")
include("reversible.jl")

# Defined by the extension PyJODEPythonCallExt (PythonCall + DLPack); declared here so that Python
# reaches them as `PyJODE.wrap` and `PyJODE.make_field` once the extension is loaded.

"""
    wrap(capsule, owner) -> AbstractVector

A zero-copy Julia view of the flat, contiguous tensor `owner`, exported by Python as the DLPack
`capsule`. Needs the extension `PyJODEPythonCallExt`.
"""
function wrap end

"""
    make_field(field, param_sizes, tbuf, Tbuf, wbuf, ubuf, dubuf, abuf, dabuf, Ubuf, Abuf, gpbuf)

The `AbstractField` whose callbacks are the Python object `field`'s methods. Needs the extension
`PyJODEPythonCallExt`.
"""
function make_field end

end # module
