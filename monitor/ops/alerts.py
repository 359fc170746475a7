"""The alert and recording rules of slat-monitor: ONE definition, rendered for Prometheus and for Grafana.

Each alert expression returns one series per offending (run, rank, cause) - never one per layer: one NaN
in a 39-layer model is one alert, not 39 - and nothing when all is well, so Prometheus fires per returned
series and Grafana's condition is "the query returned a value". Cross-rank alerts compare the ranks'
exported series (no collective in training).
Templates use Go-template syntax both systems understand (`{{ $labels.run }}`); two placeholders differ
per target and are filled by the renderers:
- `{value}`, `{percent}`, `{duration}`: the expression's value, humanized as a number, a percentage or a
  duration (`$value` in Prometheus, `$values.A.Value` in Grafana);
- `{triage}`: the triage page's base URL (the `triage_url` external label in Prometheus, a fixed URL
  chosen at render/push time in Grafana);
- `{docs}`: the base URL of these docs (the `docs_url` external label / a fixed URL in Grafana).
Every alert carries `runbook_url` (its section of docs/runbooks.md; per finding code for
SlatmonCriticalFinding) and `dashboard_url` (the triage page of that run and rank).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ALERTS",
    "DEFAULT_DOCS_URL",
    "DEFAULT_TRIAGE_URL",
    "GROUP",
    "RECORDING",
    "STALE_AFTER_SECONDS",
    "TRIAGE_LINK",
    "VALUE_FORMATS",
    "AlertRule",
    "RecordingRule",
]

GROUP = "slatmon"
DEFAULT_TRIAGE_URL = "http://127.0.0.1:8501"
# Where docs/ of this repository is browsable; set `docs_url` (Prometheus external label, or
# `slat-monitor grafana push --docs-url`) to your own copy.
DEFAULT_DOCS_URL = "https://github.com/slat-monitor/slat-monitor/blob/main/docs"
# Relative spread of the ranks' global grad norms on one step beyond which they "differ" (crossrank/divergence.py).
RANK_NORM_RTOL = "1e-05"
# A run whose last optimizer step is older than this is "stale" (raise it for very slow steps).
STALE_AFTER_SECONDS = 300
TRIAGE_LINK = "{triage}/?run={{ $labels.run | urlquery }}&rank={{ $labels.rank | urlquery }}"
# Placeholder -> the template function that humanizes the value (the same name in Prometheus and Grafana).
VALUE_FORMATS = {"value": "humanize", "percent": "humanizePercentage", "duration": "humanizeDuration"}
WHO = "run {{ $labels.run }} rank {{ $labels.rank }}"


@dataclass(frozen=True)
class AlertRule:
    """One alert. `name` is the Prometheus alert name and the Grafana rule title; `uid` the fixed Grafana
    rule UID; `for_` a Prometheus duration; `summary`/`description` templates (see module docstring)."""

    name: str
    uid: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook: str = ""  # anchor in docs/runbooks.md (a template); default: the alert name in lower case

    @property
    def runbook_url(self) -> str:
        return "{docs}/runbooks.md#" + (self.runbook or self.name.lower())


@dataclass(frozen=True)
class RecordingRule:
    """A Prometheus recording rule `record: expr` (name per the `level:metric:operations` convention)."""

    record: str
    expr: str


LOCAL_FIRST = "slatmon_nonfinite_local_first_step"
NORM_MEDIAN = "quantile by (run) (0.5, slatmon_grad_norm_applied)"
SKIPPED_RATIO = "increase(slatmon_skipped_steps_total[5m]) / clamp_min(delta(slatmon_step[5m]), 1)"
GRAD_NORM_MEDIAN = "quantile_over_time(0.5, slatmon_grad_norm_global[10m])"
MOMENT_LAG_WARN = 5

RECORDING: tuple[RecordingRule, ...] = (
    RecordingRule("slatmon:grad_norm:worst_layer", "topk by (run, rank) (1, slatmon_grad_norm)"),
    RecordingRule(
        "slatmon:nonfinite_elements:worst_layer",
        "topk by (run, rank) (1,\n"
        '  sum by (run, rank, layer) (slatmon_nonfinite_elements{tensor=~"grad|param"}) > 0)',
    ),
    RecordingRule("slatmon:update_ratio:max", "max by (run, rank) (slatmon_update_ratio)"),
    RecordingRule("slatmon:skipped_step_ratio:5m", SKIPPED_RATIO),
    RecordingRule("slatmon:grad_norm_global:median_10m", GRAD_NORM_MEDIAN),
    RecordingRule("slatmon:monitor_overhead:ratio_rate1m", "rate(slatmon_monitor_seconds_total[1m])"),
)

ALERTS: tuple[AlertRule, ...] = (
    AlertRule(
        name="SlatmonNonFiniteValues",
        uid="slatmon-nonfinite-values",
        # Params: always fatal. Grads: only without loss scaling - a scaler skips such steps by design,
        # and too many skips are SlatmonSkippedStepsHigh / SlatmonLossScaleCollapse. Without scaling the
        # exporter reports the loss scale as 1 (NaN or absent also count) and never counts a skipped step.
        # Summed over layers: one alert per run, rank and tensor (the worst layer is a recording rule).
        expr='sum by (run, rank, tensor) (slatmon_nonfinite_elements{tensor="param"}) > 0\nor\n'
        '(sum by (run, rank, tensor) (slatmon_nonfinite_elements{tensor="grad"}) > 0\n unless on (run, rank)\n'
        ' (slatmon_loss_scale > 1 or slatmon_loss_scale < 1 or slatmon_skipped_steps_total > 0))',
        for_="0s",
        severity="critical",
        summary="Non-finite {{ $labels.tensor }} values (" + WHO + ")",
        description="{value} NaN/Inf {{ $labels.tensor }} elements summed over the layers of " + WHO
        + ". Training is corrupt from this step on; the triage page names the first layer, the cause and "
        "the fixes (the worst layer is recorded as slatmon:nonfinite_elements:worst_layer).",
    ),
    AlertRule(
        name="SlatmonCriticalFinding",
        uid="slatmon-critical-finding",
        expr='slatmon_finding{severity="critical"} > 0',
        for_="0s",
        severity="critical",
        summary="Critical finding {{ $labels.code }} (" + WHO + ")",
        description="slat-monitor diagnosed {{ $labels.code }} in " + WHO
        + "; the triage page has the evidence and the ranked fixes.",
        runbook="{{ $labels.code }}",
    ),
    AlertRule(
        name="SlatmonNonFiniteFirstOnOneRank",
        uid="slatmon-nonfinite-first-on-one-rank",
        # The ranks whose loss/activations went non-finite at the run's earliest such step, unless every
        # rank of the run did at that step (then it is the model's numerics: the per-rank alerts cover it).
        expr=f"{LOCAL_FIRST}\n  == on (run) group_left () min by (run) ({LOCAL_FIRST})\n"
        f"unless on (run)\n  (count by (run) ({LOCAL_FIRST} == on (run) group_left () min by (run) ({LOCAL_FIRST}))\n"
        "   >= on (run) count by (run) (slatmon_step))",
        for_="0s",
        severity="critical",
        summary="Rank {{ $labels.rank }} went non-finite first, at step {value} (run {{ $labels.run }})",
        description="The loss or activations of " + WHO + " became non-finite at step {value} while other "
        "ranks of the run were still finite; a bad batch or a faulty device on this rank, not the model's "
        "numerics. Under DDP the other ranks then get the non-finite gradients through the all-reduce.",
    ),
    AlertRule(
        name="SlatmonGradNormRankDivergence",
        uid="slatmon-grad-norm-rank-divergence",
        # After DDP's all-reduce all ranks hold the same gradients, hence the same norm at optimizer.step()
        # (which also sees changes made after the all-reduce); compare only while every rank reports the
        # same sampled step.
        expr=f"abs(slatmon_grad_norm_applied - on (run) group_left () {NORM_MEDIAN})\n"
        f"  > on (run) group_left () ({RANK_NORM_RTOL} * {NORM_MEDIAN})\n"
        "and on (run)\n  (max by (run) (slatmon_sampled_step) == min by (run) (slatmon_sampled_step))",
        for_="0s",
        severity="critical",
        summary="Global gradient norm of rank {{ $labels.rank }} differs from the other ranks' (run "
        "{{ $labels.run }})",
        description="On the same sampled step the global gradient norm of " + WHO + " is {value} away from "
        "the median of the run's ranks, although DDP's all-reduce makes every rank's gradients equal; silent "
        "data corruption (faulty GPU, bit flip) or non-deterministic gradient code after the all-reduce.",
    ),
    AlertRule(
        name="SlatmonLossScaleCollapse",
        uid="slatmon-loss-scale-collapse",
        expr="slatmon_loss_scale < 1\nor\nslatmon_loss_scale < max_over_time(slatmon_loss_scale[15m]) / 1024",
        for_="1m",
        severity="warning",
        summary="Loss scale collapsed to {value} (" + WHO + ")",
        description="The loss scale of " + WHO + " is below 1 or fell more than 1024x below its 15-minute "
        "maximum: most steps overflow and are skipped.",
    ),
    AlertRule(
        name="SlatmonSkippedStepsHigh",
        uid="slatmon-skipped-steps-high",
        expr=f"{SKIPPED_RATIO} > 0.5",
        for_="2m",
        severity="warning",
        summary="{percent} of the optimizer steps skipped (" + WHO + ")",
        description="More than half of the optimizer steps of " + WHO + " in the last 5 minutes were "
        "skipped by the loss scaler (non-finite gradients).",
    ),
    AlertRule(
        name="SlatmonGradNormSpike",
        uid="slatmon-grad-norm-spike",
        expr=f"slatmon_grad_norm_global > 10 * {GRAD_NORM_MEDIAN}\n"
        "and count_over_time(slatmon_grad_norm_global[10m]) >= 10",
        for_="0s",
        severity="warning",
        summary="Gradient norm spike to {value} (" + WHO + ")",
        description="The global gradient norm of " + WHO + " is more than 10x its 10-minute median.",
    ),
    AlertRule(
        name="SlatmonAdamMomentLag",
        uid="slatmon-adam-moment-lag",
        # = monitor.diagnosis.adam_second_moment_lag.WARN; over 5 minutes of scrapes, so a lag seen by one
        # scrape stays up a while (steps between scrapes are not seen: the finding records every sampled step)
        expr=f"max by (run, rank) (max_over_time(slatmon_adam_rms_ratio[5m])) >= {MOMENT_LAG_WARN}",
        for_="0s",
        severity="warning",
        summary="Adam's second moment lags the gradients: RMS(g^2/v_hat) {value} (" + WHO + ")",
        description="A layer of " + WHO + " got gradients far larger in square than Adam's exp_avg_sq "
        "expects (RMS(g^2/v_hat) {value}, ~1 when healthy): its updates are several times Adam's usual "
        "size, and loss spikes followed such steps by 1-8 steps in Wortsman et al. 2023. The finding "
        "adam_second_moment_lag names the layer and the fixes (lower beta2, update clipping).",
    ),
    AlertRule(
        name="SlatmonRunStale",
        uid="slatmon-run-stale",
        expr=f"time() - slatmon_last_step_timestamp_seconds > {STALE_AFTER_SECONDS}\n"
        "and slatmon_last_step_timestamp_seconds > 0",
        for_="0s",
        severity="warning",
        summary="No optimizer step for {duration} (" + WHO + ")",
        description="The process of " + WHO + " still serves metrics but has not completed an optimizer "
        f"step for more than {STALE_AFTER_SECONDS} s (hung data loader, collective or deadlock?).",
    ),
    AlertRule(
        name="SlatmonTargetDown",
        uid="slatmon-target-down",
        expr='up{job="slatmon"} == 0',
        for_="1m",
        severity="warning",
        summary="Watched process unreachable (" + WHO + ")",
        description="Prometheus cannot scrape {{ $labels.instance }} (" + WHO + "). A run that exits "
        "cleanly removes its target file; a left-over file means the process died or hangs.",
    ),
    AlertRule(
        name="SlatmonMonitorErrors",
        uid="slatmon-monitor-errors",
        expr="increase(slatmon_monitor_errors_total[5m]) > 0",
        for_="0s",
        severity="warning",
        summary="slat-monitor caught {value} errors in 5 minutes (" + WHO + ")",
        description="The monitor of " + WHO + " is erroring (training continues unaffected); its "
        "statistics may be incomplete. See the process log.",
    ),
    AlertRule(
        name="SlatmonRecordErrors",
        uid="slatmon-record-errors",
        expr="increase(slatmon_record_errors_total[5m]) > 0",
        for_="0s",
        severity="warning",
        summary="The run record of " + WHO + " lost {value} observations in 5 minutes",
        description="Writes to the run record failed for good (a full disk, a lock held by another process, "
        "the file removed or replaced); training continues, and the record lists the missing steps. Free "
        "the disk or release the lock: the writer retries by itself.",
    ),
)
