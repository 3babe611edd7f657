# Device hooks. The core package is device-agnostic; the CUDA extension (PyJODECUDAExt) adds methods
# for `CuArray`s. Arrays here are either Julia's own or views of memory that Python owns.

"""
    devsync(x)

Wait until the device work queued on `x`'s device has finished; a no-op on the CPU. PyTorch reads
Python-owned buffers on its own CUDA stream, which does not order with CUDA.jl's task-local stream,
so every handoff to Python (a callback, or returning from an entry point) synchronises first.
"""
devsync(::AbstractArray) = nothing

"""
    release!(xs...)

Return the device memory of arrays this package allocated (never of views of Python tensors) to the
allocator at once instead of at the next GC; a no-op on the CPU. Only call it on arrays nothing else
refers to.
"""
release!(xs...) = (foreach(release_one!, xs); nothing)
release_one!(::Any) = nothing

"""
    synchronised(f, x)

Run `f()` and synchronise `x`'s device before returning or throwing, so that the caller (PyTorch, on
another stream) never reads results, or frees buffers, that CUDA.jl still has queued.
"""
function synchronised(f, x)
    try
        return f()
    finally
        devsync(x)
    end
end
