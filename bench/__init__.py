"""Benchmarks, run as modules from the project root (numbers are ratios and sizes, never test assertions):

- `python -m bench.overhead`: the monitor against its peers, interleaved step by step (variants.py,
  workloads.py, memory.py);
- `python -m bench.profile_step`: where a sampled step's time goes;
- `python -m bench.export_cost`: scrape latency and body by layer count, record size, dashboard queries;
- `python -m bench.detection`: first NaN -> metric, finding, alert, page (real servers);
- `bash bench/gpu.sh`: the GPU rows in one go on a CUDA machine.
"""
