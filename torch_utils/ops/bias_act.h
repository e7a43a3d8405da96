// Fused bias + activation + gain + clamp: shared declarations of bias_act.cpp and bias_act.cu.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

// Activation codes; must match _ACTIVATIONS[...]['cuda_idx'] in bias_act.py.
enum BiasActKind {
    kActLinear = 1, kActRelu = 2, kActLrelu = 3, kActTanh = 4, kActSigmoid = 5,
    kActElu = 6, kActSelu = 7, kActSoftplus = 8, kActSwish = 9,
};

// All tensors are contiguous and of one element type T; numel elements each.
//   grad == 0: y = clamp(act(x + b) * gain)                       (x: input)
//   grad == 1: y = x * gain * act'(s)  * mask                     (x: incoming gradient dy)
//   grad == 2: y = x * gain * act''(s) * mask                     (x: product ddx * dy)
// where s = xref + b, and mask = (|gain * act(s)| < clamp) or 1 when clamp < 0.
// relu/lrelu/linear read the sign / clamp state from yref (the forward output) instead of s.
struct BiasActParams {
    const void* x;
    const void* b;      // [size_b] along the bias dimension, or nullptr.
    const void* xref;   // Forward input, or nullptr if the activation does not need it.
    const void* yref;   // Forward output, or nullptr if the activation does not need it.
    void* y;
    int64_t numel;
    int64_t step_b;     // Product of the sizes after the bias dimension.
    int size_b;
    int act;
    int grad;
    double alpha;       // Scalars stay double so that float64 runs match the reference exactly.
    double gain;
    double clamp;       // < 0 disables clamping.
};

template <typename T> cudaError_t bias_act_launch(const BiasActParams& p, cudaStream_t stream);
