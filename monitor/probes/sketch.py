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

import math
from collections.abc import Sequence

import torch

__all__ = ["BLOCK", "SKETCH_ELEMENTS", "scale_sketched", "sketch_diffs", "sketch_view"]

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


def sketch_diffs(after: Sequence[torch.Tensor], before: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """before - after (= minus the update: same norm) over the sketched elements, written into the
    `before` copies (sketch views cloned before the update): one fused kernel, no new memory. None
    where there was no `before`."""
    keep = [i for i, o in enumerate(before) if o is not None]
    if keep:
        torch._foreach_sub_([before[i] for i in keep],  # type: ignore[misc]
                            [sketch_view(after[i].detach())[0] for i in keep])
    return list(before)


def scale_sketched(v: dict[str, list[float | None]], key: str, tensors: Sequence[torch.Tensor]) -> None:
    """Norms `v[key]` (one per tensor) measured on a sketch scaled to the whole tensor, in place."""
    values = v.get(key)
    if values is None:
        return
    for i, t in enumerate(tensors):
        if values[i] is not None and t.numel() > SKETCH_ELEMENTS:
            values[i] *= math.sqrt(sketch_view(t)[1])  # type: ignore[operator]
