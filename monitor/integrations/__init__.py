"""One-line integrations with the trainers people use. Import the one you need; this package itself
imports nothing beyond the standard library, so `import monitor` never pulls Lightning or transformers.

- `monitor.integrations.trellis.watch_trellis(trainer, **watch_options)`: TRELLIS `BasicTrainer`.
- `monitor.integrations.lightning.SlatMonitorCallback(**watch_options)`: PyTorch Lightning
  (extra `lightning`).
- `monitor.integrations.huggingface.SlatMonitorCallback(**watch_options)`: Hugging Face `Trainer`
  (extra `huggingface`).
"""

__all__: list[str] = []
