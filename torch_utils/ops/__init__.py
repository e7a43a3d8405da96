"""Fused ops for StyleGAN2-style networks, each with a CUDA kernel and a PyTorch reference ('ref'):

bias_act        -- bias + activation + gain + clamp (bias_act.py / .cpp / .cu / .h)
upfirdn2d       -- upsample, FIR filter, downsample; filter2d / upsample2d / downsample2d
conv2d_resample -- convolution with up/downsampling built on upfirdn2d
fma             -- a * b + c with broadcasting

The CUDA kernels are compiled on first use by torch_utils.custom_ops; on CPU tensors, or when the
build fails, the reference implementation is used (with a single informational note).
"""
