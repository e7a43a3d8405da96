// Python binding and argument checks for the bias_act kernel (bias_act.cu).
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>  // Not ATen/cuda/CUDAContext.h: that pulls in cuBLAS/cuSPARSE headers.
#include <c10/cuda/CUDAGuard.h>
#include "bias_act.h"

namespace {

void check_ref(const torch::Tensor& ref, const torch::Tensor& x, const char* name) {
    if (ref.numel() == 0) return;
    TORCH_CHECK(ref.sizes() == x.sizes(), "bias_act: ", name, " must have the shape of x");
    TORCH_CHECK(ref.scalar_type() == x.scalar_type(), "bias_act: ", name, " must have the dtype of x");
    TORCH_CHECK(ref.device() == x.device(), "bias_act: ", name, " must be on the device of x");
    TORCH_CHECK(ref.is_contiguous(), "bias_act: ", name, " must be contiguous");
}

// x: any shape, contiguous, CUDA. b: [x.size(dim)] or empty. xref/yref: like x, or empty.
torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor xref, torch::Tensor yref,
                       int64_t dim, int64_t act, int64_t grad, double alpha, double gain, double clamp) {
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
    TORCH_CHECK(x.is_contiguous(), "bias_act: x must be contiguous");
    TORCH_CHECK(x.dim() >= 1 && dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
    TORCH_CHECK(act >= kActLinear && act <= kActSwish, "bias_act: unknown activation code ", act);
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
    if (b.numel() != 0) {
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: b must have shape [x.shape[dim]]");
        TORCH_CHECK(b.scalar_type() == x.scalar_type(), "bias_act: b must have the dtype of x");
        TORCH_CHECK(b.device() == x.device(), "bias_act: b must be on the device of x");
        TORCH_CHECK(b.is_contiguous(), "bias_act: b must be contiguous");
    }
    check_ref(xref, x, "xref");
    check_ref(yref, x, "yref");

    const c10::cuda::OptionalCUDAGuard guard(x.device());
    torch::Tensor y = torch::empty_like(x, at::MemoryFormat::Contiguous);
    int64_t step_b = 1;
    for (int64_t d = dim + 1; d < x.dim(); ++d) step_b *= x.size(d);

    BiasActParams p;
    p.x = x.data_ptr();
    p.b = b.numel() ? b.data_ptr() : nullptr;
    p.xref = xref.numel() ? xref.data_ptr() : nullptr;
    p.yref = yref.numel() ? yref.data_ptr() : nullptr;
    p.y = y.data_ptr();
    p.numel = x.numel();
    p.step_b = step_b > 0 ? step_b : 1;
    p.size_b = static_cast<int>(x.size(dim) > 0 ? x.size(dim) : 1);
    p.act = static_cast<int>(act);
    p.grad = static_cast<int>(grad);
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;

    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    cudaError_t err = cudaSuccess;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act", [&] {
        err = bias_act_launch<scalar_t>(p, stream);
    });
    TORCH_CHECK(err == cudaSuccess, "bias_act: kernel launch failed: ", cudaGetErrorString(err));
    return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp (see bias_act.h)");
}
