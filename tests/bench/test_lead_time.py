"""bench/lead_time.py on tiny sizes: every scenario row runs, with its fixes executed from their snippets."""

from __future__ import annotations

from bench import lead_time


def test_every_row_runs_and_the_table_lists_it(capsys) -> None:
    outcomes = lead_time.main(["--seeds", "1", "--steps", "110", "--change", "100"])
    out = capsys.readouterr().out
    labels = list(dict.fromkeys(o.scenario for o in outcomes))
    assert len(labels) == len(lead_time.SCENARIOS) + 5  # + input-wakes x10 + 2 fixes x 2 scenarios
    for label in labels:
        assert f"| {label} |" in out
    assert all(len(o.losses) == 110 for o in outcomes)
    wakes = next(o for o in outcomes if o.scenario == "input-wakes")
    # the warning fires at the change this early too (at step 30 it cannot: RMS <= sqrt(bc_t / (1 - beta2)))
    assert wakes.lag == 100
