# The bridge to PyTorch: a field whose f is a PyTorch module, reached through Python callbacks, and
# zero-copy views of Python tensors. Loaded when PythonCall and DLPack are loaded with PyJODE (the
# Python package `pyjode` loads all three), so that `using PyJODE` alone stays pure Julia.
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
module PyJODEPythonCallExt

using PyJODE: PyJODE, AbstractField, check_nodes, devsync
using PythonCall: Py, pyconvert, pydel!
using DLPack: DLPack

"""
    wrap(capsule::Py, owner) -> AbstractVector

A zero-copy view of the flat, contiguous tensor `owner`, exported by Python as `capsule =
owner.__dlpack__()`.

Lifetime. DLPack.jl's `unsafe_wrap(manager, foreign)` (v0.3.1, src/DLPack.jl) keeps only `foreign`
alive with the array (in `WRAPS_POOL`, until the array's finalizer runs); the `DLManagedTensor` it
wraps is referenced only inside a `GC.@preserve` block, so its finalizer (PyTorch's deleter) may run at
the next GC. Passing the capsule as `foreign`, as DLPack.jl's own `from_dlpack` does not, would keep
nothing alive: the view of a temporary (a contiguous copy, a tableau tensor) could outlive its memory.
Passing the owning tensor keeps its storage alive for as long as the view exists. (The Python side
also holds every tensor it hands over until the solve is dropped.)

Devices. DLPack.jl wraps CUDA memory with `unsafe_wrap(CuArray, ptr, dims)`, which uses CUDA.jl's
current device and ignores the tensor's `device_id`; so the device is selected first, from the
capsule's own `dl_tensor.ctx.device_id`.
"""
function PyJODE.wrap(capsule::Py, owner)
    manager = DLPack.DLManagedTensor(capsule)
    ctx = manager.dl_tensor.ctx
    if ctx.device_type == DLPack.kDLCUDA
        select_cuda_device(Int(ctx.device_id))
    elseif ctx.device_type != DLPack.kDLCPU
        throw(ArgumentError("PyJODE wraps CPU and CUDA tensors only, got DLPack device $(ctx.device_type)"))
    end
    return vec(DLPack.unsafe_wrap(manager, owner))
end

function select_cuda_device(id::Int)
    ext = Base.get_extension(PyJODE, :PyJODECUDAExt)
    ext === nothing && throw(ArgumentError(
        "a CUDA tensor arrived but CUDA.jl is not loaded: run `import CUDA` in the Julia session " *
        "(pyjode does this for CUDA tensors when CUDA.jl is installed)"))
    ext.select_device!(id)
    return nothing
end

struct PyField{A<:AbstractVector,H<:AbstractVector} <: AbstractField
    rhs::Py
    vjp_state::Py
    vjp_all::Py
    vjp_params::Py
    sizes::Vector{Int}
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
    make_field(field::Py, param_sizes, tbuf, Tbuf, wbuf, ubuf, dubuf, abuf, dabuf, Ubuf, Abuf, gpbuf)

`field` is the Python object with the four callbacks; `param_sizes` the lengths of its parameter
tensors (a Python sequence of ints, converted with `pyconvert(Vector{Int}, …)`); the buffers are
`wrap`ped views, in this order.
"""
function PyJODE.make_field(field::Py, param_sizes, tbuf, Tbuf, wbuf, ubuf, dubuf, abuf, dabuf, Ubuf,
                           Abuf, gpbuf)
    sizes = pyconvert(Vector{Int}, param_sizes)
    sum(sizes; init = 0) == length(gpbuf) || throw(ArgumentError(
        "param_sizes $(sizes) do not add up to the $(length(gpbuf)) entries of gpbuf"))
    return PyField(field.rhs, field.vjp_state, field.vjp_all, field.vjp_params, sizes,
                   tbuf, Tbuf, wbuf, ubuf, dubuf, abuf, dabuf, Ubuf, Abuf, gpbuf)
end

function call_python(F::PyField, callback::Py, args...)
    devsync(F.ubuf)
    # Free the returned None now rather than at the next GC.
    pydel!(callback(args...))
    return nothing
end

function PyJODE.rhs!(F::PyField, du, u, t)
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

PyJODE.vjp_state!(F::PyField, du, ua, u, a, t) = call_vjp!(F, F.vjp_state, du, ua, u, a, t)

function PyJODE.vjp_all!(F::PyField, du, ua, up, u, a, t)
    call_vjp!(F, F.vjp_all, du, ua, u, a, t)
    copyto!(up, F.gpbuf)
    return nothing
end

function PyJODE.node_buffers(F::PyField)
    n = length(F.ubuf)
    return (reshape(F.Ubuf, n, :), reshape(F.Abuf, n, :), F.Tbuf, F.wbuf)
end

function PyJODE.vjp_params!(F::PyField, gp, k::Integer)
    check_nodes(F, k)
    call_python(F, F.vjp_params, k)
    copyto!(gp, F.gpbuf)
    return nothing
end

PyJODE.nparams(F::PyField) = length(F.gpbuf)
PyJODE.param_sizes(F::PyField) = F.sizes

end # module
