// Upsample -> FIR filter -> downsample in one pass: shared declarations of upfirdn2d.cpp/.cu.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

// x: [major, in_h, in_w] contiguous (major = N * C), y: [major, out_h, out_w] contiguous.
// f: [f_h, f_w] correlation kernel in the accumulation type (float, or double for double x),
//    already flipped and scaled by the gain on the host.
// y[m, oy, ox] = sum_{ty, tx} f[ty, tx] * u[m, oy * down_y + ty - pad_y0, ox * down_x + tx - pad_x0]
// where u is x upsampled by zero insertion: u[m, i * up_y, j * up_x] = x[m, i, j], zero elsewhere
// (and outside the image).
struct UpFirDn2dParams {
    const void* x;
    const void* f;
    void* y;
    int64_t major;
    int in_h, in_w, out_h, out_w;
    int up_x, up_y, down_x, down_y;
    int pad_x0, pad_y0;
    int f_h, f_w;
};

template <typename T> cudaError_t upfirdn2d_launch(const UpFirDn2dParams& p, cudaStream_t stream);
