"""Generic result rendering: markdown tables and learning-curve plots (Figures 4-6 plot a validation measure by epoch).

Shared by the reproduction report, and open to any table or curve of the package. Plots need the optional
`matplotlib` (`pip install peterrec[plots]`); it is imported only when a plot is drawn, and drawn on a
`matplotlib.figure.Figure` with the Agg canvas, so the caller's backend is never changed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

Curve = Sequence[tuple[float, float]]
"""(epoch, value) points."""


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; the first column is left-aligned, the others right-aligned."""
    align = [":--", *("--:" for _ in header[1:])]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def replace_block(path: str | Path, name: str, text: str) -> None:
    """Rewrites the block of a markdown file between `<!-- name:begin -->` and `<!-- name:end -->` with `text`, so
    that documented tables come from the run that makes them, never from a hand copy."""
    from ._io import write_bytes

    path = Path(path)
    content = path.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if content.count(begin) != 1 or content.count(end) != 1 or content.index(begin) > content.index(end):
        raise ValueError(f"{path} needs exactly one {begin} ... {end} block to rewrite.")
    head, rest = content.split(begin)
    _, tail = rest.split(end)
    write_bytes(path, f"{head}{begin}\n{text.strip()}\n{end}{tail}".encode())


def mean_curve(curves: Sequence[Curve]) -> list[tuple[float, float]]:
    """Point-wise mean of curves evaluated at the same epochs (the shortest curve sets the length)."""
    curves = [curve for curve in curves if curve]
    if not curves:
        return []
    length = min(len(curve) for curve in curves)
    return [
        (curves[0][index][0], statistics.fmean(curve[index][1] for curve in curves))
        for index in range(length)
    ]


def _figure_class():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "Plots need matplotlib: install the `plots` extra (pip install 'peterrec[plots]')."
        ) from error
    return Figure, FigureCanvasAgg


def plot_curves(
    panels: dict[str, dict[str, Sequence[Curve]]], path: Path, ylabels: dict[str, str], xlabel: str = "epoch"
) -> None:
    """Writes a PNG with one panel per title and one line per label: the mean over its curves (seeds) by `xlabel`.

    Args:
        panels: title -> label -> the curves (one per seed) to average.
        path: the PNG file.
        ylabels: title -> y-axis label.
        xlabel: what the curves' first coordinate is (epochs of training by default).
    """
    figure_class, canvas_class = _figure_class()
    figure = figure_class(figsize=(5.5 * len(panels), 4))
    canvas_class(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (title, lines) in zip(axes[0], panels.items(), strict=True):
        for label, curves in lines.items():
            mean = mean_curve(curves)
            if mean:
                axis.plot(*zip(*mean, strict=True), marker="o", markersize=3, label=label)
        axis.set_title(title)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabels[title])
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def plot_comparison(panels: dict[str, dict[str, float]], path: Path, ylabels: dict[str, str]) -> None:
    """Writes a PNG with one panel per title and one horizontal bar per label (a method or a baseline), so that each
    method is read beside its baselines.

    Args:
        panels: title -> label -> value.
        path: the PNG file.
        ylabels: title -> the measure's name (the bars' axis).
    """
    figure_class, canvas_class = _figure_class()
    figure = figure_class(figsize=(6 * len(panels), 0.45 * max(len(bars) for bars in panels.values()) + 1.5))
    canvas_class(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (title, bars) in zip(axes[0], panels.items(), strict=True):
        labels, values = list(bars), list(bars.values())
        axis.barh(range(len(bars)), values, color="tab:blue")
        axis.set_yticks(range(len(bars)), labels, fontsize=8)
        axis.invert_yaxis()
        axis.set_xlim(min(values) * 0.9, max(values) * 1.05)
        for position, value in enumerate(values):
            axis.text(value, position, f" {value:.3f}", va="center", fontsize=8)
        axis.set_title(title)
        axis.set_xlabel(ylabels[title])
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


__all__ = ["markdown_table", "mean_curve", "plot_comparison", "plot_curves", "replace_block"]
