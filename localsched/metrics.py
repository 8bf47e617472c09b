"""What every daemon's metrics registry carries besides its own metrics: the process and the Python runtime."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


def daemon_registry() -> CollectorRegistry:
    """A registry with the process (CPU, memory, file descriptors), Python GC and platform collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
