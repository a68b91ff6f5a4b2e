"""Pictures as PNG bytes (matplotlib, no display): the produced-vs-required plot of a
benchmark, one colour per model or round. `png` is what the run report's figures use too."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from evaluation.benchmark import Benchmark  # noqa: E402
from evaluation.registry import get  # noqa: E402


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def plot_points(scored: list[dict]) -> list[tuple[float, int]]:
    """(required, produced) words of per-row scores (scored.jsonl)."""
    return [(s["required"], s["produced"]) for s in scored]


def required_vs_produced_figure(benchmark: str | Benchmark, series: dict[str, list[tuple[float, int]]]) -> bytes:
    """Produced vs required words, log-log, one colour per model; y = 0 is drawn at 1."""
    benchmark = get(benchmark)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    values = [v for points in series.values() for x, y in points for v in (x, max(y, 1))] or [1, 10]
    low, high = min(values) / 1.5, max(values) * 1.5
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="produced = required")
    for label, points in series.items():
        ax.scatter([x for x, _ in points], [max(y, 1) for _, y in points], s=28, alpha=0.5, label=label)
    ax.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high), xlabel=benchmark.required_label,
           ylabel="produced words", title=f"{benchmark.title}: produced vs required")
    ax.legend(fontsize=8)
    return png(fig)
