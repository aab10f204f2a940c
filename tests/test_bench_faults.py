"""`interplay bench faults --quick`: the fault suite against a live runtime (Ray, two background actors,
the shipped interaction model) with a monitor session beside it. Slow (~1.5 min): `make test SLOW=1`.

The runtime's background engine is the bench's scripted FaultEngine (interplay/fault_kit.py says why:
the suite needs exact hostile tool calls on demand); every other part is the real one."""

from __future__ import annotations

import pytest

from interplay.faults import bench_faults


@pytest.fixture(scope="module")
def figures(ray_local):
    return bench_faults(quick=True)


@pytest.mark.slow
def test_every_fault_of_the_quick_suite_is_survived(figures):
    failed = {k: v["detail"] for k, v in figures["faults"].items() if not v["survived"]}
    assert figures["faults_tried"] >= 10 and not failed, failed


@pytest.mark.slow
def test_the_monitor_session_loses_no_turn_while_the_faults_run(figures):
    assert figures["monitor_lost_no_turn"] and figures["monitor_turn_fraction"] >= 0.99, figures


@pytest.mark.slow
def test_no_delegation_is_left_unsettled_and_no_planted_secret_appears_anywhere(figures):
    assert figures["delegations_started"] >= 4 and figures["delegations_unsettled"] == 0
    assert figures["secrets_leaked"] == 0, figures["secrets_leaked_where"]
