"""``monitor.html``: one self-contained page (inline PNG plots, no external resource).

Drawn from the ``monitor.json`` record alone, so the page shows exactly what the JSON
holds: served CTR per period and version with its 95% interval, PSI per model input
against the thresholds, the skew check's equal share per feature, then the tables.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

_STYLE = (
    "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
    "margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}.alert{color:#cf222e;font-weight:bold}"
    ".warn{color:#9a6700}.ok{color:#1a7f37}figure{display:inline-block;margin:0 1em 1em 0}"
)


def _figure(width: float, height: float) -> Any:
    # The Agg canvas directly, as in flywheel.report: no pyplot, no global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def ctr_plot(periods: list[dict[str, Any]]) -> str:
    """CTR per period, one line per model version, with 95% interval bars."""
    fig = _figure(9, 3.6)
    ax = fig.subplots()
    versions = list(dict.fromkeys(p["model_version"] for p in periods))
    for v in versions:
        rows = [p for p in periods if p["model_version"] == v]
        x = [p["start"][:16].replace("T", " ") for p in rows]
        rate = [_nan(p["ctr"]["rate"]) for p in rows]
        low = [r - _nan(p["ctr"]["low"]) for r, p in zip(rate, rows, strict=True)]
        high = [_nan(p["ctr"]["high"]) - r for r, p in zip(rate, rows, strict=True)]
        ax.errorbar(x, rate, yerr=[low, high], marker="o", capsize=3, label=v.rsplit(":", 1)[-1])
    ax.set(title="Served CTR per period (95% Wilson interval)", ylabel="CTR")
    ax.tick_params(axis="x", labelrotation=30, labelsize="small")
    ax.legend(fontsize="small")
    return _png(fig)


def psi_plot(features: list[dict[str, Any]], thresholds: dict[str, Any]) -> str:
    """PSI per model input (horizontal bars) with the warning and alert levels."""
    fig = _figure(7, max(2.5, 0.22 * len(features) + 1))
    ax = fig.subplots()
    names = [f["name"] for f in features]
    values = [_nan(f["psi"]) for f in features]
    colours = [
        {"alert": "#cf222e", "warn": "#d4a72c"}.get(f["status"], "#2f81f7") for f in features
    ]
    ax.barh(names, values, color=colours)
    ax.axvline(thresholds["psi_warn"], color="#d4a72c", linestyle="--", label="warn")
    ax.axvline(thresholds["psi_alert"], color="#cf222e", linestyle="--", label="alert")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize="x-small")
    ax.set(title="Feature drift: PSI against the champion's training set", xlabel="PSI")
    ax.legend(fontsize="small")
    return _png(fig)


def skew_plot(features: list[dict[str, Any]], threshold: float) -> str:
    """Share of served rows whose logged value equals the offline store's, per feature."""
    fig = _figure(7, max(2.5, 0.22 * len(features) + 1))
    ax = fig.subplots()
    names = [f["feature"] for f in features]
    shares = [_nan(f["equal_share"]) for f in features]
    colours = ["#cf222e" if f["status"] == "skewed" else "#1a7f37" for f in features]
    ax.barh(names, shares, color=colours)
    ax.axvline(threshold, color="#cf222e", linestyle="--", label="minimum")
    ax.set_xlim(0, 1.02)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize="x-small")
    ax.set(title="Training/serving skew: logged = offline", xlabel="equal share")
    return _png(fig)


def _cell(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict) and "rate" in value:
        if value["rate"] is None:
            return "&ndash;"
        return f"{value['rate']:.4f} [{value['low']:.4f}, {value['high']:.4f}]"
    text = html.escape(str(value))
    return f"<span class='{text}'>{text}</span>" if text in ("ok", "warn", "alert") else text


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(name: str, data: str) -> str:
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"/></figure>'


def render_page(record: dict[str, Any]) -> str:
    """The whole page for one ``monitor.json`` record."""
    quality, drift, skew = record["quality"], record["drift"], record["skew"]
    window = record["window"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Flywheel monitor</title>",
        f"<style>{_STYLE}</style></head><body><h1>Flywheel monitor</h1>",
        f"<p>Served {html.escape(str(window['first_served']))} to "
        f"{html.escape(str(window['last_served']))}; labels as of "
        f"{html.escape(str(window['labels_as_of']))} (attribution "
        f"{window['attribution_minutes']} min); schema v{record['schema_version']}.</p>",
    ]
    alerts = record.get("alerts") or []
    items = "".join(f"<li class='alert'>{html.escape(a)}</li>" for a in alerts)
    parts.append(f"<ul>{items}</ul>" if alerts else "<p class='ok'>No alerts.</p>")
    quality_cols = ["model_version", "requests", "impressions", "ctr", "cart_rate"]
    quality_cols += ["purchase_rate", "explored_share", "closed", "ece", "auc"]
    parts += ["<h2>Served quality</h2>", _table(quality["versions"], quality_cols)]
    if quality["periods"]:
        parts.append(_img("ctr per period", ctr_plot(quality["periods"])))
        parts.append(_table(quality["periods"], ["start", *quality_cols]))
    parts.append("<h2>Drift</h2>")
    if "error" in drift:
        parts.append(f"<p>No drift figures: {html.escape(drift['error'])}</p>")
    else:
        parts.append(
            f"<p>Champion {html.escape(str(drift['champion']))} "
            f"({html.escape(drift['feature_service'])}), training set "
            f"<code>{html.escape(str(drift['training_set']))}</code>.</p>"
        )
        others = [r for r in (drift["prediction"], drift["label"]) if r]
        cols = ["name", "n_reference", "n_served", "psi", "js", "ks_statistic", "status"]
        parts.append(_table(others, cols))
        parts.append(_img("psi", psi_plot(drift["features"], record["thresholds"])))
        parts.append(_table(drift["features"], cols))
    parts.append("<h2>Training/serving skew</h2>")
    if "error" in skew:
        parts.append(f"<p>No skew check: {html.escape(skew['error'])}</p>")
    else:
        threshold = record["thresholds"]["skew_min_equal_share"]
        parts.append(f"<p>{skew['rows']} served rows through {skew['feature_service']}.</p>")
        parts.append(_img("skew", skew_plot(skew["features"], threshold)))
        cols = ["feature", "compared", "equal_share", "logged_missing", "offline_missing"]
        parts.append(_table(skew["features"], [*cols, "max_abs_diff", "status"]))
    parts.append("</body></html>")
    return "".join(parts)
