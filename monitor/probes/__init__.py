"""Device-side statistics of many tensors, reaching the host in one transfer per device."""

from .batch import STATS, DeviceBatch, host_reads
from .packed import Pack, pack
from .sketch import sketch_view

__all__ = ["STATS", "DeviceBatch", "Pack", "host_reads", "pack", "sketch_view"]
