"""Circular convolutions, their adjoints and frequency responses, and average pooling's adjoint.

A circular ("same", wrap-around) convolution with an odd kernel is a linear map on images
``(batch, channels, H, W)``. Its adjoint is the circular convolution with the kernel transposed in
its channels and flipped in space, and the 2-D discrete Fourier transform block-diagonalises it:
at each frequency it is one ``(out_channels, in_channels)`` complex matrix, whose singular values
over all frequencies are the singular values of the whole map.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def circular_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Circular convolution (cross-correlation, as ``torch.nn.Conv2d``) with wrap-around padding.

    Args:
        x: images ``(batch, in_channels, H, W)``.
        kernel: ``(out_channels, in_channels, k, k)`` with k odd and ``k ≤ min(H, W)``.

    Returns:
        ``(batch, out_channels, H, W)``.
    """
    p = kernel.shape[-1] // 2
    if p == 0:
        return F.conv2d(x, kernel)
    return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), kernel)


def adjoint_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """The kernel of the adjoint map: channels transposed, space flipped, ``(in, out, k, k)``.

    For ``y = circular_conv(x, K)``, ``⟨y, v⟩ = ⟨x, circular_conv(v, adjoint_kernel(K))⟩``: the odd
    kernel's centre stays the centre, so the padding is the same as the forward map's.
    """
    return kernel.transpose(0, 1).flip(-2, -1)


def circular_conv_adjoint(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`circular_conv`: ``(batch, out_channels, H, W) → (batch, in_channels, H, W)``."""
    return circular_conv(y, adjoint_kernel(kernel))


def frequency_response(kernel: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The circular convolution's matrix at each frequency of the real 2-D FFT.

    With ``X = rfft2(x)`` and ``Y = rfft2(circular_conv(x, kernel))``, ``Y[:, :, u, v] =
    T[u, v] @ X[:, :, u, v]``. The frequencies left out by the real FFT are complex conjugates of
    those kept, so these matrices hold every singular value (and, for Hermitian combinations,
    eigenvalue) of the map.

    Args:
        kernel: ``(out_channels, in_channels, k, k)``.
        image_size: (H, W).

    Returns:
        T, complex, ``(H, W // 2 + 1, out_channels, in_channels)``.
    """
    c_in = kernel.shape[1]
    impulses = kernel.new_zeros(c_in, c_in, *image_size)
    impulses[torch.arange(c_in), torch.arange(c_in), 0, 0] = 1.0
    # The response to an impulse in channel c at the origin is the map's c-th column of filters.
    response = torch.fft.rfft2(circular_conv(impulses, kernel))
    return response.permute(2, 3, 1, 0)


def average_pool_adjoint(v: torch.Tensor, pool: int) -> torch.Tensor:
    """The adjoint of ``avg_pool2d(·, pool)`` (kernel = stride = pool): spread each value over its window.

    Args:
        v: pooled images ``(batch, channels, H / pool, W / pool)``.
        pool: window size.

    Returns:
        ``(batch, channels, H, W)``, each window filled with its value divided by ``pool²``.
    """
    if pool == 1:
        return v
    return v.repeat_interleave(pool, dim=-2).repeat_interleave(pool, dim=-1) / (pool * pool)
