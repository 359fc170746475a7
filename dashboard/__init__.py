"""The Streamlit triage page of slat-monitor: `slat-monitor triage` (or `streamlit run dashboard/app.py`).

`app.py` is the layout only; `sources.py` reads a run record or Prometheus into a History and runs the
diagnosis; `summary.py`, `frames.py`, `charts.py`, `findings_view.py` and `markdown.py` present it.
Everything but app.py and findings_view.py is plain Python, testable without a Streamlit session.
"""
