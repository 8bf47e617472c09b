"""Plots of benchmark results (PNG, matplotlib's Agg backend; ``pip install '.[bench]'``)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

COLORS = {"physical": "#999999", "local": "#1f77b4", "standard": "#d62728"}


def _pyplot() -> Any:
    try:
        import matplotlib  # noqa: PLC0415 - only benchmarks need it (the bench extra)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("plots need matplotlib: pip install '.[bench]' (make bench does)") from exc
    return plt


def require() -> None:
    """Fail before a benchmark runs, not after, when its plots cannot be drawn."""
    _pyplot()


def coldstart(result: dict[str, Any], cdf_path: Path, steps_path: Path) -> None:
    """A CDF of time to first byte per app and burst size (physical, local, standard), and the step breakdown."""
    plt = _pyplot()
    series: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for sample in result["samples"]:  # the run's samples (the results JSON keeps them in a .jsonl beside it)
        series[(sample["app"], sample["size"])][sample["mode"]].append(sample["ttfb"] * 1000)
    for key, values in result["physical_ms"].items():
        app, size = key.split("/")
        series[(app, int(size))]["physical"] = list(values)
    apps = sorted({a for a, _ in series})
    sizes = sorted({n for _, n in series})
    fig, axes = plt.subplots(len(apps), len(sizes), figsize=(4.2 * len(sizes), 3.2 * len(apps)), squeeze=False)
    for i, app in enumerate(apps):
        for j, size in enumerate(sizes):
            ax = axes[i][j]
            for mode in ("physical", "local", "standard"):
                values = sorted(series[(app, size)].get(mode, []))
                if values:
                    ax.step(values, [(k + 1) / len(values) for k in range(len(values))], where="post",
                            color=COLORS[mode], label=mode)  # fmt: skip
            ax.set_title(f"{app} app, {size} at once", fontsize=10)
            ax.set_xlabel("time to first byte (ms)")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("fraction of cold starts")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Cold starts, {result['machine']}, {result['when']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(cdf_path, dpi=110)
    plt.close(fig)

    rows = [(key, mode, entry[mode]["steps_median_ms"]) for key, entry in result["summary"].items()
            for mode in ("local", "standard") if mode in entry and key.startswith("sample/")]  # fmt: skip
    if not rows:
        return
    labels = [f"{key.split('/')[1]} at once, {mode}" for key, mode, _ in rows]
    segments = list(dict.fromkeys(label for _, _, steps in rows for label in steps))
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(rows) + 1.6))
    labelled: set[str] = set()
    for y, (_, _, steps) in enumerate(rows):
        left = 0.0
        for segment, width in steps.items():  # each path's own order, the one its cold starts go through
            if width:
                ax.barh(y, width, left=left, color=cmap(segments.index(segment) % 10),
                        label=None if segment in labelled else segment)  # fmt: skip
                labelled.add(segment)
                left += width
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("median ms from the cold start's trigger in the activator (sample app)")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(steps_path, dpi=110)
    plt.close(fig)


def warm_path(summary: dict[str, Any], paths: tuple[str, ...], path: Path) -> None:
    """Throughput at saturation and latency at a fixed rate, per path (straight, nginx, activator)."""
    plt = _pyplot()
    colors = {"direct": "#999999", "nginx": "#2ca02c", "activator": "#1f77b4"}
    fig, (rps, latency) = plt.subplots(1, 2, figsize=(9, 3.4))
    rps.bar(paths, [summary[p]["rps"] for p in paths], color=[colors[p] for p in paths])
    rps.set_title("req/s at saturation")
    width = 0.38
    xs = range(len(paths))
    latency.bar([x - width / 2 for x in xs], [summary[p]["at_rate_p50_ms"] for p in paths], width, label="p50",
                color=[colors[p] for p in paths])  # fmt: skip
    latency.bar([x + width / 2 for x in xs], [summary[p]["at_rate_p99_ms"] for p in paths], width, label="p99",
                color=[colors[p] for p in paths], alpha=0.5)  # fmt: skip
    latency.set_xticks(list(xs), paths)
    latency.set_title("ms at a fixed rate (p50 solid, p99 light)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
