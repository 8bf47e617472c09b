"""CPU by component: which program a command line runs, and what two snapshots say was used in between."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.cpu import program, snapshot, used

VENV = "/work/main/.venv/bin"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            ["/opt/kube/bin/kube-apiserver", "--etcd-servers=http://127.0.0.1:2379", "--etcd-prefix", "/registry/etcd"],
            "kube-apiserver",
            id="binary-whose-flags-mention-etcd",
        ),
        pytest.param(["/usr/bin/etcd", "--data-dir", "/tmp/etcd", ""], "etcd", id="etcd-with-cmdline-trailing-nul"),
        pytest.param(
            [f"{VENV}/python", "-m", "devcluster.nodesim", "--node", "node-1"],
            "devcluster.nodesim",
            id="python-m-module",
        ),
        pytest.param(
            [f"{VENV}/python3.11", "-u", "-m", "devcluster.knative_standin", ""],
            "devcluster.knative_standin",
            id="python-flag-then-m-module",
        ),
        pytest.param(
            [f"{VENV}/python3", f"{VENV}/activator", "--port", "8012"], "activator", id="console-script-run-by-python"
        ),
        pytest.param(
            [f"{VENV}/python3", f"{VENV}/localsched-sampleapp"],
            "localsched-sampleapp",
            id="console-script-without-arguments",
        ),
        pytest.param(["python3", "-S", "-E", "/x/leanapp.py"], "leanapp.py", id="python-flags-then-script"),
        pytest.param(["/usr/bin/python3"], "python3", id="bare-interpreter"),
        pytest.param(["kube-scheduler"], "kube-scheduler", id="binary-without-a-path"),
        pytest.param([], "", id="no-command-line"),
    ],
)
def test_program_names_what_a_command_line_runs(argv: list[str], expected: str) -> None:
    assert program(argv) == expected


def test_used_is_the_difference_per_bucket_and_zero_for_ended_processes() -> None:
    before = {"etcd": 1.0, "apps": 4.0, "activators": 2.0}
    after = {"etcd": 1.25, "apps": 1.0, "benchmark": 0.5}  # apps fell: some ended; the activators all ended
    assert used(before, after) == {"activators": 0.0, "apps": 0.0, "benchmark": 0.5, "etcd": 0.25}


def test_used_of_two_equal_snapshots_is_zero_everywhere() -> None:
    same = {"etcd": 3.0, "kube-apiserver": 7.5}
    assert used(same, dict(same)) == {"etcd": 0.0, "kube-apiserver": 0.0}


seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False)
snapshots = st.dictionaries(st.sampled_from(["etcd", "apps", "activators", "benchmark", "endpointsctl"]), seconds)


@given(before=snapshots, after=snapshots)
def test_used_is_never_negative_and_covers_the_buckets_of_both_snapshots(
    before: dict[str, float], after: dict[str, float]
) -> None:
    result = used(before, after)
    assert set(result) == set(before) | set(after)
    assert list(result) == sorted(result)
    assert all(value >= 0 for value in result.values())
    for bucket, value in result.items():
        assert value == pytest.approx(max(0.0, after.get(bucket, 0.0) - before.get(bucket, 0.0)), abs=0.005)


def test_the_snapshot_counts_this_process_as_the_benchmark() -> None:
    totals = snapshot()
    own = os.times()
    assert 0 < totals["benchmark"] <= own.user + own.system + 0.05
    assert all(value >= 0 for value in totals.values())
