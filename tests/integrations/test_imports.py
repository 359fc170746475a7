"""`import monitor` (and the integrations package itself) never imports Lightning, transformers or
accelerate: an integration module imports its trainer only when the user imports that module."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("lightning", "pytorch_lightning", "transformers", "accelerate")


def modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}


def test_import_monitor_imports_no_trainer_package():
    loaded = modules_after("import monitor, monitor.integrations, monitor.integrations.trellis")
    assert "torch" in loaded and "monitor" in loaded  # the check itself works
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_the_huggingface_integration_does_not_import_lightning():
    hf = modules_after("import monitor.integrations.huggingface")
    assert "transformers" in hf and not hf & {"lightning", "pytorch_lightning"}
