"""A NaN in the input batch is the data's, not the model's: real watched runs (every=3, so step 4 is
sampled and step 5 is not) with the truth from raw torch; the top finding names the tensor as passed and
the step, no module is blamed, the unsampled step stays sync-free, and save_bad_batch's file replays."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import monitor
from monitor.diagnosis import grad_overflow_no_scaler, nonfinite_forward, nonfinite_input, nonfinite_loss, run_rules
from monitor.history import Event, LayerObs
from monitor.probes import host_reads
from tests.models import batch

from .histories import FP16_BLOCKS, healthy, localized, replace_rows, replace_step, run_info

EVERY, STEPS = 3, 7  # sampled: 1, 4, 7


class CondNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 16)
        self.cond = nn.Linear(4, 16)
        self.out = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, *, cond: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.inp(x) + self.cond(cond)))


def data(step: int, bad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = batch(step, n=8)
    cond = torch.linspace(-1, 1, 32).reshape(8, 4) * step
    if step == bad:
        cond[1, 2] = math.nan
    return x, cond, y


def run(bad: int, **watch_options):
    """(watcher, raw-torch truth {step: (non-finite cond elements, loss finite)}, host reads per step)."""
    torch.manual_seed(0)
    model = CondNet()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    truth, reads = {}, {}
    with monitor.watch(model, opt, every=EVERY, port=None, run="inputs", **watch_options) as w:
        for step in range(1, STEPS + 1):
            x, cond, y = data(step, bad)
            before = host_reads()
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x, cond=cond), y)
            w.observe_loss(loss)
            loss.backward()
            opt.step()
            reads[step] = host_reads() - before
            truth[step] = (int((~torch.isfinite(cond)).sum()), bool(torch.isfinite(loss)))
    return w, truth, reads


@pytest.mark.parametrize("bad", [4, 5], ids=["sampled", "unsampled"])
def test_nan_batch_is_the_top_finding_naming_the_tensor_and_step(bad: int) -> None:
    w, truth, reads = run(bad)
    first_bad = min(s for s, (n, _) in truth.items() if n)
    assert first_bad == bad and not truth[bad][1]  # raw torch: the loss went NaN with the data
    found = w.findings()
    top = found[0]
    assert (top.code, top.severity, top.first_step) == ("nonfinite_input", "critical", bad)
    assert "kwargs['cond']" in top.title
    counted = f"{truth[bad][0]} of 32 elements" if bad == 4 else "flagged on an unsampled step"  # counted if sampled
    assert any(counted in e and "float32, shape 8x4" in e for e in top.evidence), top.evidence
    assert not {"nonfinite_forward", "grad_overflow_no_scaler", "nonfinite_loss"} & {f.code for f in found}
    # (a localisation armed for the next step finds the NaN weights the update wrote: not an origin)
    assert not [e for e in w.history().events if e.kind == "localized" and e.step == bad]
    if bad == 5:
        assert reads[bad] == 0  # counted on the device, read with step 7's transfer


def test_saved_batch_replays_and_names_the_tensor(tmp_path: Path) -> None:
    record = tmp_path / "r.sqlite"
    run(5, record=str(record), save_bad_batch=True)
    path = Path(f"{record}.batch-step5.pt")
    saved = torch.load(path, weights_only=True)
    _, cond, _ = data(5, 5)
    got = saved["calls"][0]["kwargs"]["cond"]
    assert torch.equal(got.isnan(), cond.isnan()) and torch.equal(got.nan_to_num(), cond.nan_to_num())
    top = monitor.diagnose(str(record))[0]
    assert top.code == "nonfinite_input" and any(str(path) in e for e in top.evidence)
    line = next(e for e in top.evidence if e.startswith("replay it"))
    printed: list = []
    exec(line.split(": ", 1)[1], {"torch": torch, "monitor": monitor, "model": CondNet(), "print": printed.append})
    [events] = printed
    assert [(e.kind, e.tensor, e.detail["input"], e.detail["nonfinite"]) for e in events] == [
        ("nonfinite", "input", "kwargs['cond']", 1)]


def test_save_bad_batch_is_validated() -> None:
    model = CondNet()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with pytest.raises(monitor.ConfigError, match=r"save_bad_batch=True needs record="):
        monitor.watch(model, opt, port=None, save_bad_batch=True)
    with pytest.raises(monitor.ConfigError, match="save_bad_batch must be True or False"):
        monitor.watch(model, opt, port=None, save_bad_batch="yes")


# -- the rules, on hand-built histories --------------------------------------------------------------

def input_event(step: int, name: str = "args[0]", n: int = 3) -> Event:
    return Event(step, "nonfinite", None, "input", {"input": name, "shape": [32, 16], "dtype": "float16",
                                                    "nonfinite": n, "numel": 512})


def nan_data_at(step: int, *, scaler: str = "none", skipped: bool = False):
    """fp16 blocks, no loss scaling: a NaN batch at `step` makes the output, loss and gradients NaN."""
    h = healthy(run_info(FP16_BLOCKS, eps=1e-4, scaler=scaler), steps=12)
    replace_step(h, step, loss=math.nan, grad_nonfinite=100, skipped=skipped)
    replace_rows(h, step, None, grad_nonfinite=50)
    h.layers.append(LayerObs(step=step, layer="[output]", activation_nonfinite=32))
    h.layers.append(LayerObs(step=step, layer="blocks.0", activation_nonfinite=64))
    h.events.append(input_event(step))
    return h


def test_nan_data_suppresses_blaming_a_module_or_the_loss() -> None:
    h = nan_data_at(5)
    assert grad_overflow_no_scaler.rule(h) == [] and nonfinite_loss.rule(h) == []
    assert nonfinite_forward.rule(h) == []  # the blocks.0 row only received the NaN
    h.events.append(localized(5, "blocks.0", in_absmax=3.0))  # even an event at that step is no origin
    assert nonfinite_forward.rule(h) == []
    found = run_rules(h)
    assert [f.code for f in found][:1] == ["nonfinite_input"] and found[0].fixes[0].kind == "data"
    h.events = [e for e in h.events if e.kind != "nonfinite"]  # without the input event: blamed as before
    assert grad_overflow_no_scaler.rule(h) != []


def test_skipped_once_is_a_warning_repeated_is_critical() -> None:
    h = nan_data_at(5, scaler="grad_scaler", skipped=True)
    [f] = nonfinite_input.rule(h)
    assert (f.severity, f.first_step) == ("warning", 5) and any("skipped" in e for e in f.evidence)
    for s in (6, 7):
        replace_step(h, s, skipped=True)
        h.events.append(input_event(s))
    assert nonfinite_input.rule(h)[0].severity == "critical"


def test_data_fix_snippet_runs() -> None:
    namespace: dict = {"torch": torch}
    exec(nonfinite_input.DATA_FIX.snippet, namespace)
    ok = namespace["batch_is_finite"]
    assert ok(torch.ones(3), 2, "x") and not ok(torch.ones(3), torch.tensor([1.0, math.inf]))
