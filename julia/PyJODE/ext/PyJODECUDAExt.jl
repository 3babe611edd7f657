# Loaded when the user also loads CUDA.jl: lets PyJODE wrap CUDA tensors from PyTorch (DLPack's own
# CUDA extension), synchronise before every handoff to Python, and free its own temporaries at once.
module PyJODECUDAExt

using PyJODE: PyJODE
using CUDA: CUDA

# CUDA.jl queues PyJODE's kernels on the current task's stream (`CUDA.stream()`), and
# `CUDA.synchronize()` (CUDACore lib/cudadrv/synchronization.jl: `synchronize(stream = stream())`)
# waits for exactly that stream. PyTorch's stream is another one, so this is what orders Julia's
# writes before PyTorch's reads.
PyJODE.devsync(::CUDA.CuArray) = CUDA.synchronize()

# `unsafe_free!` hands the memory back to CUDA.jl's pool now; Julia's GC would otherwise keep it until
# the next collection, which GPU memory pressure alone does not trigger soon enough. Only ever called
# on arrays PyJODE allocated itself (never on views of PyTorch tensors).
PyJODE.release_one!(x::CUDA.CuArray) = CUDA.unsafe_free!(x)

"""Make CUDA device `id` (PyTorch's `cuda:id`) current before wrapping memory that lives there."""
function select_device!(id::Integer)
    # `deviceid` is CUDA.jl's ordinal, the same numbering as PyTorch's `cuda:id` (both follow
    # CUDA_VISIBLE_DEVICES); `device!` is task-local, and juliacall runs every call on one task.
    CUDA.deviceid(CUDA.device()) == id || CUDA.device!(id)
    return nothing
end

end # module
