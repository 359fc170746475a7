"""A fixed strided sample of a large tensor: what the update ratio copies instead of every parameter.

The update `p_after - p_before` needs a copy of `p` taken before `optimizer.step()`. Copying, then
subtracting and reducing every element costs three passes over the parameters on every sampled
step. Instead, tensors above `SKETCH_ELEMENTS` elements are read through a view of evenly spaced
blocks of `BLOCK` contiguous elements (cache-line friendly, about `SKETCH_ELEMENTS` in all, the same
view before and after the step), and the squared update norm is scaled by numel / sampled. Optimizer
updates are spread over all elements (Adam's are ~lr each), so the estimate of a tensor's update
norm stays within ~1% of the exact one (AdamW: < 0.5%, SGD with momentum on a rank-32 gradient:
~1%; tests/monitor/test_update_ratio.py); smaller tensors are exact. Denominators stay exact.
"""

from __future__ import annotations

import torch

__all__ = ["BLOCK", "SKETCH_ELEMENTS", "sketch_view"]

SKETCH_ELEMENTS = 1 << 15
BLOCK = 128


def sketch_view(t: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(view, factor): `view` shares `t`'s memory (t itself when small or not contiguous), `factor`
    = numel / elements in view, the scale of the view's squared norm to the whole tensor's."""
    n = t.numel()
    if n <= SKETCH_ELEMENTS or not t.is_contiguous():
        return t, 1.0
    blocks = n // BLOCK
    stride = -(-blocks * BLOCK // SKETCH_ELEMENTS)  # ceil: in blocks
    view = t.reshape(-1)[: blocks * BLOCK].view(blocks, BLOCK)[::stride]
    return view, n / view.numel()
