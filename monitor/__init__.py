"""slat-monitor: per-layer mixed-precision training numerics, exported to Prometheus and diagnosed.

    import monitor
    with monitor.watch(model, optimizer, scaler=scaler) as w:
        ...train...
        print(w.findings())
"""

from __future__ import annotations

from .diagnosis import diagnose
from .errors import ConfigError, GuardStop, RecordError, SlatMonitorError, SourceError
from .findings import Finding, Fix
from .history import Event, History
from .replay import localize
from .watcher import Watcher, watch

__all__ = [
    "ConfigError",
    "Event",
    "Finding",
    "Fix",
    "GuardStop",
    "History",
    "RecordError",
    "SlatMonitorError",
    "SourceError",
    "Watcher",
    "diagnose",
    "localize",
    "watch",
]
__version__ = "0.1.0"
