"""Device-side statistics of many tensors, reaching the host in one transfer per device."""

from .batch import STATS, DeviceBatch

__all__ = ["STATS", "DeviceBatch"]
