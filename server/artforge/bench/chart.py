"""Bench charts: one panel per figure, the backends side by side as labelled bars, or as lines
over x (seconds, clients)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    values: dict[str, float]  # backend -> value
    higher_is_better: bool | None  # None: neither (the title says what to look for)
    # Instead of bars: lines of [x, y] points by name, over x in x_unit.
    lines: dict[str, list[list[float]]] | None = None
    x_unit: str = "seconds"


def write_chart(path: Path, title: str, panels: list[Panel]) -> Path:
    """Draw `panels` next to each other into the PNG `path` (needs matplotlib: the `bench` extra)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError("drawing bench charts needs matplotlib: pip install 'artforge[bench]'") from exc
    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        better = "" if panel.higher_is_better is None else f"\n({'higher' if panel.higher_is_better else 'lower'} is better)"
        if panel.lines is not None:
            for colour, (name, points) in zip(colours, panel.lines.items(), strict=False):
                marker = "o" if len(points) < 20 else None  # a few measured points, not a time series
                ax.plot([x for x, _ in points], [y for _, y in points], color=colour, marker=marker, label=name)
            if len(panel.lines) > 1:
                ax.legend(fontsize=8, frameon=False)
            ax.set_title(f"{panel.title}{better}", fontsize=10)
            ax.set_xlabel(panel.x_unit)
            ax.set_ylabel(panel.unit)
            ax.set_ylim(0, max((y for points in panel.lines.values() for _, y in points), default=1) * 1.18 or 1)
            ax.spines[["top", "right"]].set_visible(False)
            continue
        names = list(panel.values)
        values = [panel.values[n] for n in names]
        bars = ax.bar(names, values, color=colours[: len(names)])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=2)
        ax.set_title(f"{panel.title}{better}", fontsize=10)
        ax.set_ylabel(panel.unit)
        ax.set_ylim(0, max(values, default=1) * 1.18 or 1)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
