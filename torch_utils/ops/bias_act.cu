// Elementwise kernel for bias_act: forward, first and second derivative (see bias_act.h).
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include "bias_act.h"

namespace {

// Accumulate in float for 16/32-bit types, in double for double.
template <typename T> struct OpMath { using type = float; };
template <> struct OpMath<double> { using type = double; };

constexpr double kSeluLambda = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

// Value, first and second derivative of the activation at s (for the activations that use s).
template <int A, typename F> __device__ __forceinline__ void act_eval(F s, F alpha, F& f, F& d1, F& d2) {
    if constexpr (A == kActTanh) {
        F t = tanh(s);
        f = t; d1 = F(1) - t * t; d2 = F(-2) * t * d1;
    } else if constexpr (A == kActSigmoid) {
        F g = F(1) / (F(1) + exp(-s));
        f = g; d1 = g * (F(1) - g); d2 = d1 * (F(1) - F(2) * g);
    } else if constexpr (A == kActElu) {
        F e = alpha * exp(s);
        f = s > F(0) ? s : alpha * expm1(s);
        d1 = s > F(0) ? F(1) : e; d2 = s > F(0) ? F(0) : e;
    } else if constexpr (A == kActSelu) {
        const F la = F(kSeluLambda * kSeluAlpha);
        F e = la * exp(s);
        f = s > F(0) ? F(kSeluLambda) * s : la * expm1(s);
        d1 = s > F(0) ? F(kSeluLambda) : e; d2 = s > F(0) ? F(0) : e;
    } else if constexpr (A == kActSoftplus) {
        // Same threshold as torch.nn.functional.softplus: linear above 20.
        F g = F(1) / (F(1) + exp(-s));
        f = s > F(20) ? s : log1p(exp(s));
        d1 = g; d2 = g * (F(1) - g);
    } else if constexpr (A == kActSwish) {
        F g = F(1) / (F(1) + exp(-s));
        f = s * g; d1 = g * (F(1) + s * (F(1) - g)); d2 = g * (F(1) - g) * (F(2) + s * (F(1) - F(2) * g));
    } else {  // Piecewise-linear activations (forward only; derivatives come from yref).
        f = (A == kActLinear) ? s : (s > F(0) ? s : (A == kActLrelu ? s * alpha : F(0)));
        d1 = F(1); d2 = F(0);
    }
}

template <typename T, int A> __global__ void bias_act_kernel(BiasActParams p) {
    using F = typename OpMath<T>::type;
    const T* x = static_cast<const T*>(p.x);
    const T* b = static_cast<const T*>(p.b);
    const T* xref = static_cast<const T*>(p.xref);
    const T* yref = static_cast<const T*>(p.yref);
    T* y = static_cast<T*>(p.y);
    const F alpha = static_cast<F>(p.alpha), gain = static_cast<F>(p.gain), clamp = static_cast<F>(p.clamp);
    constexpr bool kPiecewiseLinear = (A == kActLinear || A == kActRelu || A == kActLrelu);

    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel;
         i += int64_t(blockDim.x) * gridDim.x) {
        const F v = static_cast<F>(x[i]);
        const F bias = b ? static_cast<F>(b[(i / p.step_b) % p.size_b]) : F(0);
        F out;
        if (p.grad == 0) {
            F f, d1, d2;
            act_eval<A, F>(v + bias, alpha, f, d1, d2);
            out = f * gain;
            if (clamp >= F(0)) out = out > clamp ? clamp : (out < -clamp ? -clamp : out);
        } else if constexpr (kPiecewiseLinear) {
            // act'(s) is 1 / alpha / 0 depending on the sign of s, which y shares (gain != 0).
            const F yv = yref ? static_cast<F>(yref[i]) : F(0);
            const bool pos = yv * gain > F(0);
            F d1 = (A == kActLinear) ? F(1) : (pos ? F(1) : (A == kActLrelu ? alpha : F(0)));
            if (clamp >= F(0) && !(fabs(yv) < clamp)) d1 = F(0);
            out = (p.grad == 1) ? v * gain * d1 : F(0);
        } else {
            F f, d1, d2;
            act_eval<A, F>(static_cast<F>(xref[i]) + bias, alpha, f, d1, d2);
            F d = (p.grad == 1) ? d1 : d2;
            if (clamp >= F(0) && !(fabs(f * gain) < clamp)) d = F(0);
            out = v * gain * d;
        }
        y[i] = static_cast<T>(out);
    }
}

}  // namespace

template <typename T> cudaError_t bias_act_launch(const BiasActParams& p, cudaStream_t stream) {
    if (p.numel == 0) return cudaSuccess;
    const int block = 256;
    const int64_t blocks_needed = (p.numel + block - 1) / block;
    const int grid = static_cast<int>(blocks_needed < 65536 ? blocks_needed : 65536);
    switch (p.act) {
        case kActLinear:   bias_act_kernel<T, kActLinear><<<grid, block, 0, stream>>>(p); break;
        case kActRelu:     bias_act_kernel<T, kActRelu><<<grid, block, 0, stream>>>(p); break;
        case kActLrelu:    bias_act_kernel<T, kActLrelu><<<grid, block, 0, stream>>>(p); break;
        case kActTanh:     bias_act_kernel<T, kActTanh><<<grid, block, 0, stream>>>(p); break;
        case kActSigmoid:  bias_act_kernel<T, kActSigmoid><<<grid, block, 0, stream>>>(p); break;
        case kActElu:      bias_act_kernel<T, kActElu><<<grid, block, 0, stream>>>(p); break;
        case kActSelu:     bias_act_kernel<T, kActSelu><<<grid, block, 0, stream>>>(p); break;
        case kActSoftplus: bias_act_kernel<T, kActSoftplus><<<grid, block, 0, stream>>>(p); break;
        case kActSwish:    bias_act_kernel<T, kActSwish><<<grid, block, 0, stream>>>(p); break;
        default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

template cudaError_t bias_act_launch<float>(const BiasActParams&, cudaStream_t);
template cudaError_t bias_act_launch<double>(const BiasActParams&, cudaStream_t);
template cudaError_t bias_act_launch<c10::Half>(const BiasActParams&, cudaStream_t);
template cudaError_t bias_act_launch<c10::BFloat16>(const BiasActParams&, cudaStream_t);
