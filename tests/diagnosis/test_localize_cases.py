"""Issue 13 localisation cases, each a real watched run on CPU with its ground truth from raw torch: an
overflow in a parent module's own forward code (and one nested deeper), a backward overflow in a parent's
own code, and the consequence that shares a step with its cause (the loss-scale collapse) ranking second
and saying what it follows from. Each checks the top finding, the module it names and its first step."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import monitor
from tests.models import batch

K = 3  # the fault starts at this step (1-based)
STEPS = 8


class Block(nn.Module):
    """Two children with the block's own arithmetic between them: from `gain` 1e6 on, fp16 overflows
    there, in Block.forward itself, and child `b` merely receives the inf."""

    def __init__(self, inner: nn.Module | None = None) -> None:
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.inner = inner if inner is not None else nn.Identity()
        self.b = nn.Linear(16, 16)
        self.gain = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inner(self.a(x))
        h = (h.half() * self.gain).float()  # past 65504 once gain is 1e6
        return self.b(h)


class LogBlock(nn.Module):
    """Finite forward, overflowing backward in its own code: from `shift` 12 on, p = sigmoid(h - 12) is
    ~1e-5 in fp16 and log(p)'s gradient g / p passes 65504."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.b = nn.Linear(16, 16)
        self.shift = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.a(x).half() - self.shift)
        return self.b(torch.log(p).float())


class Net(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 16), block, nn.GELU())
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def fault_on(block: nn.Module) -> None:
    if isinstance(block, LogBlock):
        block.shift = 12.0
    else:
        block.gain = 1e6


def scaled_run(make: Callable[[], Net], block_of: Callable[[Net], nn.Module], **watch_options):
    """STEPS watched GradScaler steps (fp32 weights, fp16 arithmetic inside the block), the fault from
    step K on; (model, steps the scaler skipped, the closed watcher)."""
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu")
    w = monitor.watch(model, opt, scaler=scaler, port=None, run="cases", **watch_options)
    skipped = []
    for step in range(1, STEPS + 1):
        if step == K:
            fault_on(block_of(model))
        x, y = batch(step, n=8)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        w.observe_loss(loss)
        before = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < before:
            skipped.append(step)
    w.close()
    return model, skipped, w


def forward_truth(model: Net, x: torch.Tensor) -> dict[str, tuple[bool, bool]]:
    """Raw torch, no monitor: per module path, (inputs finite, output finite)."""
    seen: dict[str, tuple[bool, bool]] = {}
    handles = []
    for name, m in model.named_modules():
        def hook(_m, args, out, name=name):
            ins = all(bool(torch.isfinite(a).all()) for a in args if torch.is_tensor(a))
            seen.setdefault(name, (ins, bool(torch.isfinite(out).all())))
        handles.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def backward_truth(model: Net, block: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[bool, bool]:
    """Raw torch: (gradient w.r.t. the block's output finite, gradient w.r.t. its input finite)."""
    grads: dict[str, torch.Tensor] = {}

    def pre(_m, args):
        args[0].register_hook(lambda g: grads.setdefault("in", g))

    def post(_m, _args, out):
        out.register_hook(lambda g: grads.setdefault("out", g))

    handles = [block.register_forward_pre_hook(pre), block.register_forward_hook(post)]
    (nn.functional.mse_loss(model(x), y) * 65536.0).backward()
    for h in handles:
        h.remove()
    return bool(torch.isfinite(grads["out"]).all()), bool(torch.isfinite(grads["in"]).all())


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory: pytest.TempPathFactory):
    record = tmp_path_factory.mktemp("cases") / "parent.sqlite"
    return scaled_run(lambda: Net(Block()), lambda m: m.body[1], record=str(record), save_bad_batch=True)


def test_overflow_in_a_parents_own_code_names_the_parent(parent_run) -> None:
    model, skipped, w = parent_run
    truth = forward_truth(model, batch(K, n=8)[0])
    # ground truth: the block got finite inputs, its first child stayed finite, its second child got the inf
    assert truth["body.1"] == (True, False) and truth["body.1.a"] == (True, True) and not truth["body.1.b"][0]
    assert skipped[0] == K
    top = w.findings()[0]
    assert (top.code, top.layers, top.first_step, top.severity) == ("nonfinite_forward", ("body.1",), K, "critical")
    assert any("Block.forward's own code" in e and "after body.1.a" in e and "before body.1.b" in e
               for e in top.evidence), top.evidence
    event = next(e for e in w.history().events if e.kind == "localized" and e.detail["direction"] == "forward")
    assert (event.layer, event.step, event.detail["own_code"]) == ("body.1", K + 1, True)  # armed after the skip


def test_consequence_sharing_the_step_ranks_second_and_says_so(parent_run) -> None:
    _, _, w = parent_run
    found = w.findings()
    assert [f.code for f in found[:2]] == ["nonfinite_forward", "loss_scale_collapse"]
    collapse = found[1]
    assert collapse.first_step == found[0].first_step == K  # same step: the rule order alone put it first
    assert collapse.severity == "critical"  # keeps its own severity
    assert f"follows from nonfinite_forward at step {K}" in collapse.evidence[-1]
    assert not any("follows from" in e for e in found[0].evidence)


def test_overflow_nested_deeper_names_the_deepest_parent() -> None:
    """The overflow happens in the inner block's own code: the outer block (whose own code is finite)
    and the inner block's children are not named."""
    model, skipped, w = scaled_run(lambda: Net(Block(inner=Block())), lambda m: m.body[1].inner)
    truth = forward_truth(model, batch(K, n=8)[0])
    assert truth["body.1.inner"] == (True, False) and truth["body.1"] == (True, False)
    assert truth["body.1.inner.a"] == (True, True)
    top = w.findings()[0]
    assert (top.code, top.layers, top.first_step) == ("nonfinite_forward", ("body.1.inner",), K)


def test_backward_overflow_in_a_parents_own_code_names_the_parent() -> None:
    model, skipped, w = scaled_run(lambda: Net(LogBlock()), lambda m: m.body[1])
    x, y = batch(K, n=8)
    block = model.body[1]
    assert all(ok for ins_ok_out_ok in forward_truth(model, x).values() for ok in ins_ok_out_ok)  # forward finite
    assert backward_truth(model, block, x, y) == (True, False)  # its own backward made the inf
    assert skipped == list(range(K, STEPS + 1))
    event = next(e for e in w.history().events if e.kind == "localized")
    assert (event.layer, event.detail["direction"], event.detail["own_code"]) == ("body.1", "backward", True)
    top = w.findings()[0]
    assert (top.code, top.layers, top.first_step) == ("loss_scale_collapse", ("body.1",), K)


def test_nothing_downstream_is_blamed(parent_run) -> None:
    """Nothing that only received the inf (the block's child b, the GELU, the head) is named anywhere."""
    _, _, w = parent_run
    named = {x for f in w.findings() for x in f.layers}
    assert named == {"body.1"}


def test_the_batch_that_overflowed_is_saved_and_replays(parent_run) -> None:
    """save_bad_batch: the armed iteration's batch (the first localised non-finite forward) is saved next
    to the record; the replay line in the finding names the same module on a model with the fault."""
    _, _, w = parent_run
    saved = [e for e in w.history().events if e.kind == "batch_saved"]
    assert [(e.step, e.detail["reason"]) for e in saved] == [(K + 1, "nonfinite_forward")]
    assert saved[0].detail["path"].endswith(f"parent.sqlite.batch-step{K + 1}.pt")
    line = next(e for e in w.findings()[0].evidence if e.startswith("replay it"))
    model = Net(Block())
    fault_on(model.body[1])
    printed: list = []
    exec(line.split(": ", 1)[1], {"torch": torch, "monitor": monitor, "model": model, "print": printed.append})
    assert [(e.layer, e.detail["direction"]) for e in printed[0] if e.kind == "localized"] == [("body.1", "forward")]
