"""The evaluation report: ROC and calibration plots and the self-contained HTML page.

Presentation only: :func:`flywheel.evaluate.evaluate` decides and writes ``metrics.json``,
then calls these to draw ``roc.png``, ``calibration.png`` and ``report.html`` for the KFP UI.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Final

import numpy as np

from flywheel.evaluate import auc, calibration_bins, expected_calibration_error


def new_figure() -> Any:
    """A matplotlib Figure on its own Agg canvas."""
    # The Agg canvas directly: no pyplot, no global backend switch, safe in any process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_roc(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> bytes:
    """Draw every ROC curve of ``scores`` to ``path``; return the PNG bytes for embedding."""
    from sklearn.metrics import roc_curve

    fig = new_figure()
    ax = fig.add_subplot()
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(y, p):.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test split")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path.read_bytes()


def plot_calibration(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> bytes:
    """Draw the reliability diagram (10 equal-width bins) to ``path``; return PNG bytes."""
    fig = new_figure()
    ax = fig.add_subplot()
    for name, p in scores.items():
        count, mean_p, rate = calibration_bins(y, p)
        filled = count > 0
        ece = expected_calibration_error(y, p)
        ax.plot(mean_p[filled], rate[filled], marker="o", label=f"{name} (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate")
    ax.set(title="Calibration, test split", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path.read_bytes()


_METRIC_ROWS: Final = (
    "auc",
    "logloss",
    "ece",
    "ndcg_at_10",
    "rows",
    "groups_with_positive",
    "positive_rate",
    "mean_prediction",
)


def _cell(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def render_report(record: dict[str, Any], plots: dict[str, bytes]) -> str:
    """A self-contained HTML page: decision, popularity baseline, the metrics table
    (challenger, champion, popularity) and the two plots inline."""
    challenger, champion = record["challenger"], record["champion"] or {}
    popularity = record["popularity"]
    rows = "".join(
        f"<tr><th>{name}</th><td>{_cell(challenger[name])}</td>"
        f"<td>{_cell(champion.get(name))}</td><td>{_cell(popularity.get(name))}</td></tr>"
        for name in _METRIC_ROWS
    )
    margin = popularity["min_lift"]
    need = "the first-model check is off" if margin is None else f"a first model needs {margin:.4f}"
    baseline = (
        "<p><b>Popularity baseline:</b> ranks by "
        f"{html.escape(', ties by '.join(popularity['ranked_by']))} (point in time); "
        f"challenger AUC lift over it {popularity['lift_auc']:+.4f}; {need}</p>"
    )
    verdict = "BLESSED" if record["blessed"] else "NOT BLESSED"
    colour = "#1a7f37" if record["blessed"] else "#cf222e"
    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}"/></figure>'
        for name, png in plots.items()
    )
    rule = html.escape(json.dumps(record["rule"]))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Flywheel evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
        "figure{display:inline-block;margin:0 1em 0 0}</style></head><body>"
        f"<h1>Evaluation: <span style='color:{colour}'>{verdict}</span></h1>"
        f"<p><b>Reason:</b> {html.escape(record['reason'])}</p>"
        f"<p><b>Rule:</b> <code>{rule}</code> &middot; test rows: {record['test_rows']:,}</p>"
        f"{baseline}<table><tr><th>metric</th><th>challenger</th><th>champion</th>"
        f"<th>popularity</th></tr>{rows}</table>{images}</body></html>"
    )
