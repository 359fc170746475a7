"""Device-side statistics of many tensors, reaching the host in one transfer per device."""

from .batch import STATS, DeviceBatch, host_reads
from .sketch import sketch_view

__all__ = ["STATS", "DeviceBatch", "host_reads", "sketch_view"]
