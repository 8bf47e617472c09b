"""Both daemons expose the process and runtime collectors an operator's dashboards expect."""

from __future__ import annotations

from prometheus_client import generate_latest

from localsched.metrics import daemon_registry


def test_the_registry_carries_process_gc_and_platform_metrics() -> None:
    text = generate_latest(daemon_registry()).decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                 "python_gc_collections_total", "python_info"):  # fmt: skip
        assert f"\n{name}" in text or text.startswith(name), name
