# A field whose f is a PyTorch module, reached through Python callbacks.
#
# Python owns every buffer; Julia holds zero-copy views made once (`wrap`). A callback takes no
# arguments except the node count: it reads its inputs from the buffers and writes its outputs there.
#
#   rhs()           reads ubuf, tbuf[1]              writes dubuf = f
#   vjp_state()     reads ubuf, abuf, tbuf[1]        writes dubuf = f, dabuf = aᵀ∂f/∂u
#   vjp_all()       reads ubuf, abuf, tbuf[1]        writes dubuf, dabuf, gpbuf = aᵀ∂f/∂θ
#   vjp_params(k)   reads Ubuf, Abuf, Tbuf, wbuf     writes gpbuf = Σ_j w_j a_jᵀ∂f/∂θ(T_j, U_j)
#
# Times and weights are host Float64 (`tbuf`, `Tbuf`, `wbuf`) whatever the state's device, so Julia
# never indexes a GPU array with scalars. `tbuf` and `Tbuf` are separate on purpose: a state VJP
# between staging nodes would otherwise overwrite a node's time.

"""
    wrap(capsule::Py) -> AbstractVector

A zero-copy Julia view of a flat, contiguous tensor exported by Python with `t.__dlpack__()`.
Python keeps ownership; the view keeps the storage alive until Julia's GC drops it.
"""
wrap(capsule::Py) = vec(DLPack.unsafe_wrap(DLPack.DLManagedTensor(capsule), capsule))

"""Wait for device work on `x` before Python reads it; a no-op on the CPU (the CUDA extension adds a method)."""
devsync(::AbstractArray) = nothing

struct PyField{A<:AbstractVector,H<:AbstractVector} <: AbstractField
    rhs::Py
    vjp_state::Py
    vjp_all::Py
    vjp_params::Py
    tbuf::H
    Tbuf::H
    wbuf::H
    ubuf::A
    dubuf::A
    abuf::A
    dabuf::A
    Ubuf::A
    Abuf::A
    gpbuf::A
end

"""
    make_field(field::Py, tbuf, Tbuf, wbuf, ubuf, dubuf, abuf, dabuf, Ubuf, Abuf, gpbuf) -> PyField

`field` is the Python object with the four callbacks; the buffers are `wrap`ped in this order.
"""
make_field(field::Py, tbuf, Tbuf, wbuf, ubuf, dubuf, abuf, dabuf, Ubuf, Abuf, gpbuf) =
    PyField(field.rhs, field.vjp_state, field.vjp_all, field.vjp_params,
        tbuf, Tbuf, wbuf, ubuf, dubuf, abuf, dabuf, Ubuf, Abuf, gpbuf)

function call_python(F::PyField, callback::Py, args...)
    devsync(F.ubuf)
    # Free the returned None now rather than at the next GC.
    pydel!(callback(args...))
    return nothing
end

function rhs!(F::PyField, du, u, t)
    copyto!(F.ubuf, u)
    F.tbuf[1] = t
    call_python(F, F.rhs)
    copyto!(du, F.dubuf)
    return nothing
end

# Both VJP calls pass (u, a, t) through the shared buffers and read back f and aᵀ∂f/∂u.
function call_vjp!(F::PyField, fn, du, ua, u, a, t)
    copyto!(F.ubuf, u)
    copyto!(F.abuf, a)
    F.tbuf[1] = t
    call_python(F, fn)
    copyto!(du, F.dubuf)
    copyto!(ua, F.dabuf)
    return nothing
end

vjp_state!(F::PyField, du, ua, u, a, t) = call_vjp!(F, F.vjp_state, du, ua, u, a, t)

function vjp_all!(F::PyField, du, ua, up, u, a, t)
    call_vjp!(F, F.vjp_all, du, ua, u, a, t)
    copyto!(up, F.gpbuf)
    return nothing
end

function node_buffers(F::PyField)
    n = length(F.ubuf)
    return (reshape(F.Ubuf, n, :), reshape(F.Abuf, n, :), F.Tbuf, F.wbuf)
end

function vjp_params!(F::PyField, gp, k::Integer)
    check_nodes(F, k)
    call_python(F, F.vjp_params, k)
    copyto!(gp, F.gpbuf)
    return nothing
end

nparams(F::PyField) = length(F.gpbuf)
