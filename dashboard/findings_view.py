"""Streamlit rendering of findings: one expander per finding (the first one open), most severe first,
each with its evidence, first step, layers and its fixes best first (summary + the Python snippet)."""

from __future__ import annotations

import streamlit as st

from monitor.findings import Finding, rank

from .mdtext import escape

__all__ = ["BADGES", "ICONS", "render_finding", "render_findings", "step_text"]

ICONS = {"critical": ":material/error:", "warning": ":material/warning:", "info": ":material/info:"}
BADGES = {"critical": ":red-badge[critical]", "warning": ":orange-badge[warning]", "info": ":blue-badge[info]"}
MAX_LAYERS = 12


def step_text(first_step: int | None) -> str:
    """Where the finding starts, in words (0 = predicted from the set-up before step 1)."""
    if first_step == 0:
        return "pre-flight: predicted from the set-up, before step 1"
    return "step unknown" if first_step is None else f"first seen at step {first_step}"


def _layers_text(layers: tuple[str, ...]) -> str:
    shown = ", ".join(layers[:MAX_LAYERS])
    return shown + (f" (+{len(layers) - MAX_LAYERS} more)" if len(layers) > MAX_LAYERS else "")


def render_finding(n: int, finding: Finding, expanded: bool = False) -> None:
    """One finding in an expander (call inside the page's main area). Its texts (layer names, evidence
    with values from the run, codes a Prometheus exporter reported) are shown as plain text; the one
    Markdown line, the label, is escaped."""
    icon = ICONS.get(finding.severity, ICONS["info"])
    with st.expander(f"**{n}\\. {escape(finding.title)}**", expanded=expanded, icon=icon):
        st.markdown(f"{BADGES.get(finding.severity, escape(finding.severity))} {escape(finding.code)} · "
                    f"{escape(step_text(finding.first_step))}")
        if finding.layers:
            st.text(f"Layers: {_layers_text(finding.layers)}")
        if finding.evidence:
            st.markdown("**Evidence**")
            st.text("\n".join(f"• {line}" for line in finding.evidence))
        if not finding.fixes:
            return
        st.markdown("**Fixes, best first**")
        for k, fix in enumerate(finding.fixes, 1):
            st.markdown(f"{k}\\. **{escape(fix.kind)}** — {escape(fix.summary)}")
            if fix.snippet:
                st.code(fix.snippet, language="python", wrap_lines=True)


def render_findings(findings: list[Finding]) -> None:
    """Every finding, critical first (rank() again, so any caller's order is safe). Only the first is
    open: the rules rank the root cause before its consequences (adam_eps_underflow before the
    nonfinite_after_update it causes); the others are one click away."""
    for n, finding in enumerate(rank(list(findings)), 1):
        render_finding(n, finding, expanded=n == 1)
