"""``python -m loadtest <benchmark> [options]``: one entry point for every benchmark (``make bench`` runs each).

Benchmarks bring up their own devcluster (apart from ``make demo``'s and the tests'), write JSON and Markdown
results (and plots) under ``loadtest/results/``, and fail loudly on any error instead of printing a table.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "coldstart": ("loadtest.coldstart", "cold starts through the DaemonSet activators: local vs standard path"),
    "kubelet": ("loadtest.kubelet_burst", "the simulated kubelet under a burst of pods, with a profile"),
    "warm": ("loadtest.warm_path", "requests through the activator vs straight to the pod"),
    "subsetting": ("loadtest.subsetting_sim", "activator subsetting at scale, in process"),
    "chaos": ("loadtest.chaos", "faults under steady load (nodes, activators, leader, API server, etcd, autoscaler)"),
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(__doc__.strip(), file=sys.stderr)
        for name, (_, text) in BENCHMARKS.items():
            print(f"  {name:<12} {text}", file=sys.stderr)
        return 2
    name, argv = sys.argv[1], sys.argv[2:]
    module = importlib.import_module(BENCHMARKS[name][0])
    sys.argv = [f"python -m loadtest {name}", *argv]
    result = module.main()
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
