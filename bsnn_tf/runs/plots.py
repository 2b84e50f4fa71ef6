"""Plots people would rather look at than tables: accuracy against time steps.

`accuracy_figure` draws one curve per label on a log2 T axis, the ANN as a
dashed line and, with `tolerance`, the band within which an SNN counts as
lossless. It builds a Matplotlib `Figure` on the Agg canvas, so it needs no
display and never touches pyplot's global state.

Example:
    >>> figure = accuracy_figure({"bsnn": {32: 0.95, 64: 0.99}}, ann_accuracy=0.99,
    ...                          title="demo CNN")
    >>> figure.savefig("accuracy_vs_timesteps.png", dpi=120)
"""

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def accuracy_figure(curves, ann_accuracy, title, *, tolerance=None, log_scale=True,
                    zoom=False):
    """Top-1 accuracy against T.

    Args:
        curves: {label: {T: accuracy in [0, 1]}}.
        ann_accuracy: drawn as a dashed line.
        title: the figure's title.
        tolerance: if given, shades [ANN - tolerance, ANN] (where T* is counted).
        log_scale: a log2 T axis, ticked at the curves' T when there are few.
        zoom: the accuracy axis from 12 points below the ANN to just above it.

    Returns:
        A matplotlib `Figure`; `figure.savefig(path)` writes it.
    """
    figure = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, accuracy in curves.items():
        steps = sorted(accuracy)
        axes.plot(steps, [100 * accuracy[t] for t in steps], marker="o", markersize=3,
                  label=label)
    axes.axhline(100 * ann_accuracy, color="black", linestyle="--", linewidth=1,
                 label=f"ANN ({ann_accuracy:.2%})")
    if tolerance is not None:
        axes.axhspan(100 * (ann_accuracy - tolerance), 100 * ann_accuracy, color="grey",
                     alpha=0.2)
    if log_scale:
        axes.set_xscale("log", base=2)
        steps = sorted({t for accuracy in curves.values() for t in accuracy})
        if len(steps) <= 12:
            axes.set_xticks(steps, [str(t) for t in steps])
            axes.minorticks_off()
    if zoom:
        axes.set_ylim(max(0, 100 * ann_accuracy - 12), 100 * ann_accuracy + 1.5)
    axes.set_xlabel("time steps T")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure
