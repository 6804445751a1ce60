"""Plotly figures as plain dicts (JSON for plotly.js in the page; no Python plotly needed)."""

from __future__ import annotations

from typing import Any

from service.ui.drift import MAX_STRENGTH, DriftView
from service.ui.traffic import Traffic

Figure = dict[str, Any]
_LAYOUT: dict[str, Any] = {
    "margin": {"l": 55, "r": 20, "t": 40, "b": 45},
    "height": 320,
    "legend": {"orientation": "h", "y": -0.25},
    "hovermode": "closest",
}


def _fig(title: str, data: list[dict[str, Any]], **layout: Any) -> Figure:
    return {"data": data, "layout": {**_LAYOUT, "title": {"text": title}, **layout}}


def drift_trend(view: DriftView) -> Figure:
    """Share of drifted features, prediction drift score and labelled accuracy, per run;
    insufficient-data runs as hollow markers at 0 labelled as such, never as "no drift"."""
    analysed = [r for r in view.runs if r["status"] in ("ok", "drift")]
    lacking = [r for r in view.runs if r["status"] == "insufficient_data"]
    failed = [r for r in view.runs if r["status"] == "error"]

    def trace(rows: list[dict[str, Any]], key: str, name: str, **style: Any) -> dict[str, Any]:
        return {
            "type": "scatter", "mode": "lines+markers", "name": name,
            "x": [r["started_at"] for r in rows], "y": [r.get(key) for r in rows],
            "text": [r["run_id"] for r in rows], **style,
        }  # fmt: skip

    data = [trace(analysed, "drifted_share", "share of drifted features")]
    if any(r.get("prediction_score") is not None for r in analysed):
        data.append(trace(analysed, "prediction_score", "prediction drift score"))
    if any(r.get("realized_accuracy") is not None for r in analysed):
        data.append(trace(analysed, "realized_accuracy", "accuracy (labelled rows)"))
    for rows, name, color in ((lacking, "insufficient data", "#888"), (failed, "error", "#c00")):
        if rows:
            data.append({
                "type": "scatter", "mode": "markers", "name": name,
                "x": [r["started_at"] for r in rows], "y": [0 for _ in rows],
                "text": [f"{r['run_id']}: {name} ({r['rows']} rows)" for r in rows],
                "marker": {"symbol": "circle-open", "size": 10, "color": color},
            })  # fmt: skip
    return _fig("Drift runs", data, yaxis={"rangemode": "tozero"})


# pale below 1 (not drifted), orange to dark red from 1 (the threshold) up to the cap
_SCALE = [[0, "#f7fbff"], [0.099, "#fee8c8"], [0.1, "#fc8d59"], [0.3, "#d7301f"], [1, "#67001f"]]


def drift_heatmap(view: DriftView) -> Figure:
    data = [
        {
            "type": "heatmap", "x": view.heat_runs, "y": view.features, "z": view.heat,
            "text": view.heat_text, "zmin": 0, "zmax": MAX_STRENGTH, "colorscale": _SCALE,
            "colorbar": {"title": {"text": "score vs threshold"}},
            "hovertemplate": "%{y}<br>%{x}<br>%{text}<br>%{z:.2f} of the threshold<extra></extra>",
        }
    ]  # fmt: skip
    height = max(320, 18 * len(view.features) + 140)
    return _fig(
        "Drift per feature and run (≥ 1: drifted)", data, height=height,
        xaxis={"type": "category"}, yaxis={"automargin": True},
    )  # fmt: skip


def traffic(t: Traffic) -> list[Figure]:
    def per_version(key: str, scale: float = 1.0) -> list[dict[str, Any]]:
        out = []
        for v, s in t.series.items():
            values = [None if x is None else x * scale for x in getattr(s, key)]
            out.append({
                "type": "scatter", "mode": "lines+markers", "name": f"v{v}",
                "x": [x.isoformat() for x in s.times], "y": values,
            })  # fmt: skip
        return out

    axes = {
        "xaxis": {"range": [t.since.isoformat(), t.until.isoformat()], "type": "date"},
        "yaxis": {"rangemode": "tozero"},
    }
    return [
        _fig("Requests per bucket", per_version("requests"), **axes),
        _fig("Errors (5xx) per bucket", per_version("errors"), **axes),
        _fig("Latency p99 (ms)", per_version("p99_s", 1000.0), **axes),
        _fig("Latency p50 (ms)", per_version("p50_s", 1000.0), **axes),
    ]
