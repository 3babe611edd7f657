# Loaded when the user also loads CUDA.jl: lets PyJODE wrap CUDA tensors from PyTorch (DLPack's own
# CUDA extension) and synchronise before each call into Python, which reads the buffers on its own
# stream.
module PyJODECUDAExt

using PyJODE: PyJODE
using CUDA: CUDA

PyJODE.devsync(::CUDA.CuArray) = CUDA.synchronize()

end # module
