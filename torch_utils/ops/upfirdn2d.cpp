// Python binding and argument checks for the upfirdn2d kernel (upfirdn2d.cu).
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>  // Not ATen/cuda/CUDAContext.h: that pulls in cuBLAS/cuSPARSE headers.
#include <c10/cuda/CUDAGuard.h>
#include "upfirdn2d.h"

namespace {

// x: [N, C, H, W] CUDA; f: [f_h, f_w] correlation kernel (float32, or float64 when x is float64).
// Returns y: [N, C, out_h, out_w] with out = (in * up + pad0 + pad1 - f + down) / down.
torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int64_t up_x, int64_t up_y, int64_t down_x,
                        int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1) {
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must have shape [N, C, H, W]");
    TORCH_CHECK(f.dim() == 2 && f.numel() > 0, "upfirdn2d: f must have shape [f_h, f_w]");
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on the device of x");
    const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    TORCH_CHECK(f.scalar_type() == acc_type, "upfirdn2d: f must be float32 (float64 for float64 x)");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up/down must be >= 1");
    TORCH_CHECK(x.size(2) * up_y < INT32_MAX && x.size(3) * up_x < INT32_MAX, "upfirdn2d: image too large");

    const int64_t in_h = x.size(2), in_w = x.size(3);
    const int64_t span_y = in_h * up_y + pad_y0 + pad_y1 - f.size(0);
    const int64_t span_x = in_w * up_x + pad_x0 + pad_x1 - f.size(1);
    TORCH_CHECK(span_y >= 0 && span_x >= 0, "upfirdn2d: padded input is smaller than the filter");
    const int64_t out_h = span_y / down_y + 1, out_w = span_x / down_x + 1;

    const c10::cuda::OptionalCUDAGuard guard(x.device());
    x = x.contiguous();
    f = f.contiguous();
    torch::Tensor y = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options());

    UpFirDn2dParams p;
    p.x = x.data_ptr();
    p.f = f.data_ptr();
    p.y = y.data_ptr();
    p.major = x.size(0) * x.size(1);
    p.in_h = static_cast<int>(in_h);
    p.in_w = static_cast<int>(in_w);
    p.out_h = static_cast<int>(out_h);
    p.out_w = static_cast<int>(out_w);
    p.up_x = static_cast<int>(up_x);
    p.up_y = static_cast<int>(up_y);
    p.down_x = static_cast<int>(down_x);
    p.down_y = static_cast<int>(down_y);
    p.pad_x0 = static_cast<int>(pad_x0);
    p.pad_y0 = static_cast<int>(pad_y0);
    p.f_h = static_cast<int>(f.size(0));
    p.f_w = static_cast<int>(f.size(1));

    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    cudaError_t err = cudaSuccess;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d", [&] {
        err = upfirdn2d_launch<scalar_t>(p, stream);
    });
    TORCH_CHECK(err == cudaSuccess, "upfirdn2d: kernel launch failed: ", cudaGetErrorString(err));
    return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "Upsample, FIR-filter and downsample a batch of images (see upfirdn2d.h)");
}
