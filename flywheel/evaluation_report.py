"""The evaluation report: ROC and calibration plots and the self-contained HTML page.

Presentation only: :func:`flywheel.evaluate.evaluate` decides and writes ``metrics.json``
(with the thinned ROC curve of :func:`roc_points` and the off-policy table of :func:`ope_section`),
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
from flywheel.objective import ScoreKind


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


def ope_section(block: dict[str, Any] | None) -> str:
    """The off-policy check (``metrics.json``'s ``ope``) as a paragraph and a table."""
    if block is None:
        return ""
    mode = "required" if block["required"] else "report only"
    head = f"<h2>Off-policy check ({mode})</h2>"
    if not block["computed"]:
        return f"{head}<p>Not computed: {html.escape(str(block['reason']))}</p>"
    window = block["window"]
    note = (
        f"<p>{block['slates']:,} closed slates ({block['slots']:,} slots) of the champion "
        f"from {html.escape(window['since'])} to {html.escape(window['until'])}; effective "
        f"sample size {block['effective_sample_size']:,.0f} (needs {block['min_ess']:,.0f}, "
        f"and {block['min_slates']:,} slates); reward: {html.escape(block['reward'])} per "
        f"slate; log: {html.escape(block['log'])}."
        + (
            ""
            if block["sufficient"]
            else f" <b>Too little data:</b> {html.escape(block['reason'])}"
        )
        + "</p>"
    )
    rows = [(f"challenger {n.upper()}", e) for n, e in block["challenger"].items()]
    rows.append(("champion (logged)", block["champion_logged"]))
    body = "".join(
        f"<tr><th>{name}</th><td>{_cell(e['value'])}</td><td>{_cell(e['low'])}</td>"
        f"<td>{_cell(e['high'])}</td></tr>"
        for name, e in rows
    )
    return (
        f"{head}{note}<table><tr><th>policy</th><th>value</th><th>95% low</th>"
        f"<th>95% high</th></tr>{body}</table>"
    )


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
        f"<th>popularity</th></tr>{rows}</table>{ope_section(record.get('ope'))}{images}"
        "</body></html>"
    )


def roc_points(
    y: np.ndarray, p: np.ndarray, kind: ScoreKind = "probability", max_points: int = 200
) -> dict[str, list[float]]:
    """The challenger's ROC curve thinned to at most ``max_points`` (for the KFP UI)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, p)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).astype(int))
    # sklearn's first threshold is +inf; JSON and KFP want a finite number (a probability
    # at most 1; a ranking score's own largest value).
    top = 1.0 if kind == "probability" else float(np.max(p))
    thr = np.clip(thresholds[keep], 0.0 if kind == "probability" else -np.inf, top)
    return {
        "fpr": fpr[keep].tolist(),
        "tpr": tpr[keep].tolist(),
        "thresholds": thr.tolist(),
    }
