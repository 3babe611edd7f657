# Explicit Runge–Kutta tableaus for the reversible solver's base step. Python passes pyjode's own
# coefficients (`tableau_rowmajor`), so both backends take identical steps; the named constructors are
# for Julia users.

"""An explicit Runge–Kutta method: strictly lower-triangular `a` (s×s), weights `b`, nodes `c`."""
struct Tableau
    a::Matrix{Float64}
    b::Vector{Float64}
    c::Vector{Float64}
    function Tableau(a::AbstractMatrix, b::AbstractVector, c::AbstractVector)
        s = length(b)
        size(a) == (s, s) && length(c) == s ||
            throw(ArgumentError("tableau sizes disagree: a is $(size(a)), b has $s, c has $(length(c))"))
        all(iszero(a[i, j]) for i in 1:s for j in i:s) ||
            throw(ArgumentError("the tableau is not explicit: a must be strictly lower-triangular"))
        return new(Matrix{Float64}(a), Vector{Float64}(b), Vector{Float64}(c))
    end
end

stages(tab::Tableau) = length(tab.b)

"""Build a tableau from a flat row-major `a` (as PyTorch stores an s×s tensor), `b` and `c`."""
tableau_rowmajor(aflat::AbstractVector, b::AbstractVector, c::AbstractVector) =
    Tableau(permutedims(reshape(collect(aflat), length(b), length(b))), collect(b), collect(c))

"""
    tableau(name) -> Tableau

`euler`, `midpoint`, `heun`, `rk4`, `bosh3` (the 3rd-order solution of Bogacki–Shampine) and
`dopri5` (the 5th-order solution of Dormand–Prince).
"""
function tableau(name::AbstractString)
    name == "euler" && return Tableau(zeros(1, 1), [1.0], [0.0])
    name == "midpoint" && return Tableau([0 0; 1/2 0], [0.0, 1.0], [0.0, 0.5])
    name == "heun" && return Tableau([0 0; 1 0], [0.5, 0.5], [0.0, 1.0])
    name == "rk4" && return Tableau([0 0 0 0; 1/2 0 0 0; 0 1/2 0 0; 0 0 1 0],
                                    [1/6, 1/3, 1/3, 1/6], [0.0, 0.5, 0.5, 1.0])
    name == "bosh3" && return Tableau([0 0 0; 1/2 0 0; 0 3/4 0], [2/9, 1/3, 4/9], [0.0, 0.5, 0.75])
    if name == "dopri5"
        a = [0 0 0 0 0 0
             1/5 0 0 0 0 0
             3/40 9/40 0 0 0 0
             44/45 -56/15 32/9 0 0 0
             19372/6561 -25360/2187 64448/6561 -212/729 0 0
             9017/3168 -355/33 46732/5247 49/176 -5103/18656 0]
        b = [35/384, 0, 500/1113, 125/192, -2187/6784, 11/84]
        c = [0, 1/5, 3/10, 4/5, 8/9, 1]
        return Tableau(a, b, c)
    end
    throw(ArgumentError("no built-in tableau \"$name\"; choose euler, midpoint, heun, rk4, bosh3 or " *
                        "dopri5, or build one with Tableau(a, b, c)"))
end
