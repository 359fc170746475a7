"""Streamlit caches around dashboard.sources and dashboard.frames: the script re-runs on every widget change,
so a source is read once per 10 s (and again when a record's mtime changes), and the per-layer passes over
every row (~2 s at 2M rows) run once per source. `_loaded` arguments are not hashed: the (source, stamp)
key already identifies them."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from . import frames
from .sources import Loaded, Source, load, prometheus_runs

__all__ = ["cached_layer_frame", "cached_load", "cached_runs", "cached_worst", "clear_all", "stamp_of"]


@st.cache_data(ttl=10, show_spinner="Reading the run ...", max_entries=16)
def cached_load(source: Source, stamp: float) -> Loaded:
    """load(), cached for 10 s per source (`stamp`: the record's mtime, so a growing record is re-read)."""
    return load(source)


@st.cache_data(ttl=10, show_spinner=False, max_entries=16)
def cached_runs(url: str, lookback: str) -> dict[tuple[str, int], str]:
    return prometheus_runs(url, lookback)


@st.cache_data(ttl=10, show_spinner=False, max_entries=16)
def cached_worst(source: Source, stamp: float, _loaded: Loaded) -> list[str]:
    """worst_layers() once per loaded source (one pass over every layer row: ~2 s at 2M rows)."""
    return frames.worst_layers(_loaded.history, _loaded.findings)


@st.cache_data(ttl=10, show_spinner=False, max_entries=64)
def cached_layer_frame(source: Source, stamp: float, layers: tuple[str, ...], field: str,
                       _loaded: Loaded) -> pd.DataFrame:
    """layer_frame() per (source, layers, field): the charts redraw on every widget change."""
    return frames.layer_frame(_loaded.history, layers, field)


def stamp_of(source: Source) -> float:
    """The record's mtime (0 when missing, and for Prometheus): part of every cache key."""
    try:
        return os.stat(Path(source.record).expanduser()).st_mtime if source.kind == "record" else 0.0
    except OSError:
        return 0.0


def clear_all() -> None:
    """Forget every cached read (the sidebar's Reload button)."""
    for cached in (cached_load, cached_runs, cached_worst, cached_layer_frame):
        cached.clear()
