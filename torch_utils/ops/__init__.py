"""Fused ops for StyleGAN2-style networks, with CUDA kernels and PyTorch references ('ref') where they help:

bias_act        -- bias + activation + gain + clamp (bias_act.py / .cpp / .cu / .h)
upfirdn2d       -- upsample, FIR filter, downsample; filter2d / upsample2d / downsample2d
conv2d_resample -- convolution with up/downsampling built on upfirdn2d
conv2d_gradfix  -- torch's conv2d / conv_transpose2d with a backward that can skip weight gradients
fma             -- a * b + c with broadcasting

The CUDA kernels are compiled on first use by torch_utils.custom_ops; on CPU tensors, or when the
build fails, the reference implementation is used (with a single informational note).
"""
