"""Property tests: over random (often absurd) histories every rule returns well-formed findings and
never raises; run_rules ranks them."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.diagnosis import RULES, run_rules
from monitor.findings import FIX_KINDS, SEVERITIES, Finding
from monitor.history import Event, GroupInfo, History, LayerInfo, LayerObs, RunInfo, StepObs

NAMES = ["input_layer", "blocks.0", "blocks.0.attn", "blocks.1", "out_layer", "<root>", "[output]", "[master]", ""]
DTYPES = ["float16", "bfloat16", "float32", "torch.float16", "half", "int8", "", None]

floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 1e-8, 1e-4, 2.0**-25, 65504.0, 65536.0, 1.0, -1.0]))
counts = st.one_of(st.none(), st.integers(-3, 10_000), st.sampled_from([0, 0, 0]))
ratios = st.one_of(st.none(), st.floats(-0.5, 1.5), st.sampled_from([0.0, 0.5, 0.9, 1.0, math.nan]))
steps_n = st.integers(-2, 40)

groups = st.builds(GroupInfo, lr=floats.map(lambda x: 1e-4 if x is None else x), eps=floats,
                   betas=st.one_of(st.none(), st.tuples(floats, floats), st.just((0.9, 0.999))),
                   weight_decay=st.one_of(st.just(0.0), floats.map(lambda x: x or 0.0)),
                   amsgrad=st.booleans(), fused=st.booleans())
layer_infos = st.builds(LayerInfo, dtype=st.sampled_from(DTYPES), state_dtype=st.sampled_from(DTYPES),
                        numel=st.integers(-5, 10**7), trainable=st.booleans(), in_optimizer=st.booleans(),
                        group=st.one_of(st.none(), st.integers(-2, 3)))
run_infos = st.builds(
    RunInfo, optimizer=st.sampled_from(["AdamW", "Adam", "NAdam", "Adamax", "SGD", "", "my adam!"]),
    groups=st.lists(groups, max_size=3).map(tuple),
    scaler=st.sampled_from(["none", "disabled", "custom", "grad_scaler", "", "odd"]),
    layers=st.dictionaries(st.sampled_from(NAMES), layer_infos, max_size=5),
    device=st.sampled_from(["cpu", "cuda:0", "", "mps"]), torch_version=st.sampled_from(["2.13.0", "", "x"]),
    autocast=st.sampled_from([None, "float16", "bfloat16", "weird"]))
step_obs = st.builds(StepObs, step=steps_n, sampled=st.booleans(), skipped=st.booleans(),
                     skipped_total=st.integers(-1, 50), loss=floats, loss_scale=floats, grad_norm_total=floats,
                     grad_nonfinite=counts, param_nonfinite=counts,
                     lr=st.lists(floats.map(lambda x: 0.0 if x is None else x), max_size=2).map(tuple))
layer_obs = st.builds(LayerObs, step=steps_n, layer=st.sampled_from(NAMES), grad_norm=floats, param_norm=floats,
                      update_ratio=floats, grad_nonfinite=counts, param_nonfinite=counts,
                      param_nonfinite_before=counts, zero_grad_ratio=ratios, state_zero_ratio=ratios,
                      activation_nonfinite=counts)
details = st.dictionaries(st.sampled_from(["direction", "dtype", "in_absmax", "out_absmax", "nonfinite", "first",
                                          "last", "observations", "reason", "last_step"]),
                          st.one_of(st.sampled_from(["forward", "backward", "float16", "inf", "nan", "x"]),
                                    floats, st.integers()), max_size=5)
events = st.builds(Event, step=steps_n, kind=st.sampled_from(["localized", "nonfinite", "error", "x",
                                                                      "record_gap", "record_unclosed"]),
                   layer=st.one_of(st.none(), st.sampled_from(NAMES)),
                   tensor=st.sampled_from([None, "grad", "param", "loss", "activation"]), detail=details)
histories = st.builds(History, run=run_infos, steps=st.lists(step_obs, max_size=40),
                      layers=st.lists(layer_obs, max_size=60), events=st.lists(events, max_size=6))


def known_steps(h: History) -> set[int]:
    return {0} | {s.step for s in h.steps} | {r.step for r in h.layers} | {e.step for e in h.events}


def check_well_formed(f: object, h: History) -> None:
    assert isinstance(f, Finding)
    assert f.severity in SEVERITIES
    assert isinstance(f.code, str) and f.code and isinstance(f.title, str) and f.title
    assert f.evidence and all(isinstance(e, str) and e.strip() for e in f.evidence)
    assert f.first_step in known_steps(h)  # 0 (pre-flight) or a step the history has
    assert all(isinstance(x, str) for x in f.layers)
    for fix in f.fixes:
        assert fix.kind in FIX_KINDS and fix.summary
        compile(fix.snippet, "<fix>", "exec")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories)
def test_rules_never_raise_and_are_well_formed(h: History) -> None:
    for _, rule in RULES:
        out = rule(h)  # a raise fails the test: rules must be total
        assert isinstance(out, list)
        for f in out:
            check_well_formed(f, h)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories)
def test_run_rules_ranks_one_finding_per_code(h: History) -> None:
    found = run_rules(h)
    assert len({f.code for f in found}) == len(found)
    order = [SEVERITIES.index(f.severity) for f in found]
    assert order == sorted(order)


perturbations = st.lists(st.tuples(
    st.integers(1, 40),
    st.sampled_from(["grad_norm_total", "loss", "loss_scale", "skipped", "update_ratio", "zero_grad_ratio",
                     "param_nonfinite", "grad_nonfinite", "state_zero_ratio", "activation_nonfinite"]),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 10**6), st.booleans())),
    max_size=25)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["fp32", "inflat_all", "amp", "fp16-naive"]), perturbations)
def test_perturbed_realistic_histories(mode: str, edits: list) -> None:
    """Healthy runs of each precision mode with random numbers changed at random steps."""
    import dataclasses

    from .histories import FP16_BLOCKS, FP32_MODEL, healthy, run_info

    layers, scaler, master, scale = {"fp32": (FP32_MODEL, "none", False, None),
                                     "inflat_all": (FP16_BLOCKS, "custom", True, 2.0**16),
                                     "amp": (FP32_MODEL, "grad_scaler", False, 65536.0),
                                     "fp16-naive": (FP16_BLOCKS, "none", False, None)}[mode]
    h = healthy(run_info(layers, scaler=scaler, in_optimizer=not master, eps=1e-4), steps=40, loss_scale=scale)
    for step, field, value in edits:
        if field in {f.name for f in dataclasses.fields(StepObs)}:
            h.steps = [dataclasses.replace(s, **{field: value}) if s.step == step else s for s in h.steps]
        else:
            h.layers = [dataclasses.replace(r, **{field: value}) if r.step == step else r for r in h.layers]
    for _, rule in RULES:
        for f in rule(h):
            check_well_formed(f, h)
    run_rules(h)


METRICS = ["slatmon_step", "slatmon_loss", "slatmon_loss_scale", "slatmon_skipped_steps_total",
           "slatmon_grad_norm", "slatmon_grad_norm_global", "slatmon_update_ratio", "slatmon_nonfinite_elements",
           "slatmon_nonfinite_steps_total", "slatmon_zero_grad_ratio", "slatmon_adam_state_zero_ratio",
           "slatmon_optimizer_lr", "slatmon_optimizer_eps", "slatmon_layer_info", "slatmon_finding",
           "slatmon_run_info", "slatmon_other"]
label_sets = st.fixed_dictionaries({"__name__": st.sampled_from(METRICS)}, optional={
    "layer": st.sampled_from(NAMES), "tensor": st.sampled_from(["grad", "param", "activation", "x"]),
    "group": st.sampled_from(["0", "1", "x", ""]), "dtype": st.sampled_from(["float16", "float32", "none"]),
    "state_dtype": st.sampled_from(["float16", "none", ""]), "code": st.sampled_from(["adam_eps_underflow", "x"]),
    "severity": st.sampled_from(["critical", "warning", "bogus"]), "optimizer": st.sampled_from(["AdamW", ""]),
    "scaler": st.sampled_from(["none", "grad_scaler"]), "master_weights": st.sampled_from(["true", "false"])})
series_strategy = st.lists(st.tuples(label_sets, st.lists(st.tuples(st.integers(0, 30).map(float),
                                                                    st.floats(allow_nan=True)), max_size=8)),
                           max_size=20)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series_strategy)
def test_prometheus_timeline_never_raises(series: list) -> None:
    from monitor.sources.timeline import build_history

    h = build_history(series, "r", 0)
    for f in run_rules(h):
        check_well_formed(f, h)
