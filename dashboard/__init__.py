"""The Streamlit triage page of slat-monitor: `slat-monitor triage` (or `streamlit run dashboard/app.py`).

`app.py` is the layout only; `sources.py` reads a run record or Prometheus into a History and runs the
diagnosis; `cache.py` keeps Streamlit from re-reading on every widget change; `summary.py`, `frames.py`,
`charts.py`, `findings_view.py` and `mdtext.py` present it. Everything but app.py, cache.py and
findings_view.py is plain Python, testable without a Streamlit session. Module names avoid those of
installed packages: `streamlit run` puts this folder on sys.path.
"""
