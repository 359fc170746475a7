"""grad_overflow_no_scaler, nonfinite_forward, nonfinite_loss: telling the three apart."""

from __future__ import annotations

import math

from monitor.diagnosis import grad_overflow_no_scaler, nonfinite_forward, nonfinite_loss, run_rules
from monitor.history import Event, LayerObs

from .histories import FP16_BLOCKS, FP32_MODEL, healthy, localized, replace_rows, replace_step, run_info

NAN = math.nan


def broken_from(step: int, *, scaler: str = "none", layers: dict | None = None, loss: float = NAN,
                grad_layers: list[str] | None = None, steps: int = 12):
    """Grads non-finite at `step` (in `grad_layers`, default all), params non-finite afterwards."""
    h = healthy(run_info(layers or FP16_BLOCKS, eps=1e-4, scaler=scaler), steps=steps)
    replace_step(h, step, loss=loss, grad_nonfinite=100, param_nonfinite=100, grad_norm_total=None)
    replace_rows(h, step, grad_layers, grad_nonfinite=50)
    replace_rows(h, step, None, param_nonfinite=50)
    for s in range(step + 1, steps + 1):
        replace_step(h, s, loss=NAN, grad_nonfinite=100, param_nonfinite=100)
        replace_rows(h, s, None, grad_nonfinite=50, param_nonfinite=50, param_nonfinite_before=50)
    return h


def root_row(h, step: int, n: int) -> None:
    """The watcher's model-output row."""
    h.layers.append(LayerObs(step=step, layer="[output]", activation_nonfinite=n))


# -- grad_overflow_no_scaler ------------------------------------------------------------------------

def test_backward_overflow_with_finite_loss() -> None:
    h = broken_from(5, loss=0.7, grad_layers=["blocks.0", "blocks.1"])
    [f] = grad_overflow_no_scaler.rule(h)
    assert (f.severity, f.first_step, f.layers) == ("critical", 5, ("blocks.0", "blocks.1"))
    assert [x.kind for x in f.fixes] == ["scaler", "dtype"]
    assert "log_scale" in f.fixes[0].snippet  # float16 weights: GradScaler would refuse them


def test_forward_overflow_seen_by_the_root_output_row() -> None:
    h = broken_from(5)
    root_row(h, 5, 4096)
    [f] = grad_overflow_no_scaler.rule(h)
    assert f.first_step == 5 and any("forward pass" in e for e in f.evidence)
    assert nonfinite_loss.rule(h) == []
    assert run_rules(h)[0].code == "grad_overflow_no_scaler"


def test_forward_overflow_localised_in_fp16_module() -> None:
    h = broken_from(5, steps=5)  # the event is on the same step, before weights went bad
    h.events.append(localized(5, "blocks.1.attn", out_absmax=math.inf))
    [f] = grad_overflow_no_scaler.rule(h)
    assert f.layers == ("blocks.1.attn",)
    assert f.fixes[0].kind == "dtype" and "blocks.1.attn" in f.fixes[0].snippet


def test_only_fp16_grads_bad_while_fp32_fine_is_overflow() -> None:
    h = broken_from(5, grad_layers=["blocks.0", "blocks.1"])
    assert grad_overflow_no_scaler.rule(h)[0].first_step == 5
    assert nonfinite_loss.rule(h) == []


def test_ambiguous_nan_loss_in_fp16_without_scaler_prefers_overflow() -> None:
    """Loss NaN, all grads NaN, activations unchecked: both causes look alike; the fp16 overflow leads."""
    h = broken_from(5)
    [f] = grad_overflow_no_scaler.rule(h)
    assert f.severity == "critical" and any("not checked" in e for e in f.evidence)
    [g] = nonfinite_loss.rule(h)
    assert (g.severity, g.first_step) == ("warning", 5) and any("not checked" in e for e in g.evidence)
    found = [x.code for x in run_rules(h)]
    assert found[0] == "grad_overflow_no_scaler" and "nonfinite_loss" in found


def test_measured_finite_output_makes_it_the_loss() -> None:
    h = broken_from(5)
    root_row(h, 5, 0)  # the model's output was finite at the bad step
    assert grad_overflow_no_scaler.rule(h) == []
    [g] = nonfinite_loss.rule(h)
    assert g.severity == "critical" and "activations finite" in g.title


def test_fp32_nan_loss_is_the_loss() -> None:
    h = broken_from(5, layers=FP32_MODEL)
    assert grad_overflow_no_scaler.rule(h) == []
    assert nonfinite_loss.rule(h)[0].severity == "critical"


def test_quiet_with_a_scaler_or_without_fp16() -> None:
    assert grad_overflow_no_scaler.rule(broken_from(5, loss=0.7, scaler="grad_scaler")) == []
    assert grad_overflow_no_scaler.rule(broken_from(5, loss=0.7, layers=FP32_MODEL)) == []
    assert grad_overflow_no_scaler.rule(healthy()) == []


def test_fp16_autocast_counts_as_fp16() -> None:
    h = broken_from(5, loss=0.7, layers=FP32_MODEL)
    h.run = run_info(FP32_MODEL, eps=1e-4, autocast="float16")
    [f] = grad_overflow_no_scaler.rule(h)
    assert "GradScaler('cuda'" in f.fixes[0].snippet  # fp32 weights: the GradScaler route


# -- nonfinite_forward ------------------------------------------------------------------------------

def test_localised_forward_origin_is_named() -> None:
    h = healthy(run_info(FP16_BLOCKS, eps=1e-4, scaler="grad_scaler"), steps=12)
    h.events.append(localized(6, "blocks.0.attn", in_absmax=2.5, out_absmax=math.inf))
    [f] = nonfinite_forward.rule(h)
    assert (f.layers, f.first_step, f.severity) == (("blocks.0.attn",), 6, "warning")  # once, scaler skips it
    assert any("65504" in e for e in f.evidence)
    h.events.append(localized(7, "blocks.0.attn"))
    assert nonfinite_forward.rule(h)[0].severity == "critical"  # again on the next step: persistent


def test_consequence_of_nan_weights_is_not_an_origin() -> None:
    h = broken_from(5, steps=8)
    h.events.append(localized(6, "input_layer", dtype="float32", in_absmax=3.0, out_absmax=NAN))
    h.events.append(localized(6, "blocks.0", in_absmax=NAN, out_absmax=NAN))
    assert nonfinite_forward.rule(h) == []


def test_no_scaler_forward_origin_is_critical() -> None:
    h = healthy(run_info(FP16_BLOCKS, eps=1e-4), steps=6)
    h.events.append(localized(3, "blocks.1", out_absmax=70000.0))
    assert nonfinite_forward.rule(h)[0].severity == "critical"


def test_activation_rows_fallback_skips_the_model_output() -> None:
    h = healthy(steps=6)
    root_row(h, 4, 10)
    assert nonfinite_forward.rule(h) == []
    h.layers.append(LayerObs(step=4, layer="blocks.1.mlp", activation_nonfinite=3))
    assert nonfinite_forward.rule(h)[0].layers == ("blocks.1.mlp",)


def test_fp32_origin_suggests_guarding_the_math() -> None:
    h = healthy(run_info(FP32_MODEL, scaler="grad_scaler"), steps=6)
    h.events.append(localized(3, "encoder.kl", dtype="float32", out_absmax=math.inf))
    assert nonfinite_forward.rule(h)[0].fixes[0].kind == "loss_eps"


# -- nonfinite_loss ---------------------------------------------------------------------------------

def test_skipped_nan_loss_with_finite_activations() -> None:
    """TRELLIS inflat_all + loss-nan at one step: skipped, activations checked finite on the next."""
    h = healthy(run_info(FP16_BLOCKS, in_optimizer=False, scaler="custom"), steps=12, loss_scale=2.0**12)
    replace_step(h, 7, loss=NAN, skipped=True, skipped_total=1, loss_scale=2.0**11)
    h.layers = [r for r in h.layers if r.step != 7] + [LayerObs(step=7, layer="[output]", activation_nonfinite=0)]
    h.events.append(Event(7, "nonfinite", None, "loss", {"value": "nan"}))
    [f] = nonfinite_loss.rule(h)
    assert f.first_step == 7 and f.severity == "warning"  # one skipped occurrence
    assert any("activations" in e and "finite" in e for e in f.evidence)
    assert [x.kind for x in f.fixes] == ["loss_eps"] and "clamp_min" in f.fixes[0].snippet
    assert run_rules(h)[0].code == "nonfinite_loss"


def test_repeated_nan_loss_is_critical_even_with_a_scaler() -> None:
    h = healthy(run_info(FP32_MODEL, scaler="grad_scaler"), steps=12, loss_scale=65536.0)
    for s in (7, 8, 9):
        replace_step(h, s, loss=NAN, skipped=True)
    assert nonfinite_loss.rule(h)[0].severity == "critical"


def test_loss_nan_after_weights_broke_is_not_reported() -> None:
    h = broken_from(5, loss=0.7, grad_layers=["blocks.0"])
    assert nonfinite_loss.rule(h) == []  # NaN loss from step 6 on comes from NaN weights


def test_forward_origin_nearby_suppresses_nonfinite_loss() -> None:
    h = broken_from(5, steps=5)
    h.events.append(localized(6, "blocks.1.attn"))
    assert nonfinite_loss.rule(h) == []


def test_record_style_nan_loss_event_counts_as_nonfinite() -> None:
    """SQLite stores a NaN loss as NULL: the "nonfinite"/"loss" event must still make the loss non-finite."""
    h = broken_from(5)
    replace_step(h, 5, loss=None)
    root_row(h, 5, 0)
    assert grad_overflow_no_scaler.rule(h) != []  # loss unknown: the overflow happened in the backward
    h.events.append(Event(5, "nonfinite", None, "loss", {"value": "nan"}))
    assert grad_overflow_no_scaler.rule(h) == []  # loss NaN with a finite model output: the loss itself
    assert nonfinite_loss.rule(h)[0].first_step == 5
