"""Render a dashboard's panels to one PNG from the same PromQL the Grafana JSON uses (for the README).

matplotlib draws what Prometheus' range API returns for each panel query, so the picture shows exactly the
series an operator will see in Grafana (without running Grafana here).
Run: python dashboards/render.py --prometheus http://127.0.0.1:9090 [--dashboard recops-serving] [--minutes 15]
 or: python dashboards/render.py --sample   (a throw-away Prometheus backfilled with the contract-shaped
     sample series of tests/dashboards/contract_series.py; made dashboards/img/recops-rollouts.png)
The serving preview dashboards/img/recops-serving-live.png comes from live servers:
     RECOPS_WRITE_PREVIEW=1 pytest tests/dashboards/test_queries_live.py
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import httpx
import matplotlib
from PIL import Image

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panels import DASHBOARDS, Dashboard, concrete

_SCALE = {"s": (1000.0, "ms"), "percentunit": (100.0, "%")}


def _legend(fmt: str, metric: dict[str, str]) -> str:
    out = fmt
    for k, v in metric.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def query_range(url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    r = httpx.get(
        f"{url}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": step},
        timeout=30,
    )
    body = r.json()
    if body.get("status") != "success":
        raise ValueError(f"{expr}: {body.get('error')}")
    return body["data"]["result"]


def render(
    url: str,
    dashboard: Dashboard,
    out: Path,
    start: float,
    end: float,
    *,
    skip_external: bool = False,
    note: str = "Prometheus range queries of the Grafana panels",
) -> dict[str, int]:
    """Draw every time-series panel; returns the number of series drawn per panel title."""
    panels = [p for p in dashboard.panels if p.kind == "timeseries"]
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.3 * rows), dpi=60, squeeze=False)
    step = max(1.0, (end - start) / 120)
    drawn: dict[str, int] = {}
    for ax, panel in zip(axes.flat, panels, strict=False):
        series = []
        for q in panel.queries:
            if q.external and skip_external:
                continue
            for s in query_range(url, concrete(q.expr), start, end, step):
                pts = [(_ts(float(t)), float(v)) for t, v in s["values"]]
                series.append((_legend(q.legend, s["metric"])[:38], pts))
        peak = max((abs(v) for _, pts in series for _, v in pts if not math.isnan(v)), default=0.0)
        mult, unit = _SCALE.get(panel.unit, (1.0, panel.unit))
        if panel.unit == "s" and peak >= 1:
            mult, unit = 1.0, "s"
        for label, pts in series:
            ax.plot([t for t, _ in pts], [v * mult for _, v in pts], linewidth=1.2, label=label)
        if series:
            drawn[panel.title] = len(series)
        ax.set_title(panel.title, fontsize=8.5, loc="left")
        ax.tick_params(labelsize=7)
        ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%.3g"))
        ax.set_ylabel(unit, fontsize=7)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M" if end - start > 600 else "%H:%M:%S"))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", ncol=2, frameon=False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{dashboard.title}  ({note})", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    # A 64-colour palette PNG is a fraction of the RGBA size and looks the same (keeps the repo small).
    img = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba()).convert("RGB")
    img.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
    plt.close(fig)
    return drawn


def _ts(t: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(t, tz=dt.UTC)


def _sample(d: Dashboard, out: Path, minutes: float) -> dict[str, int]:
    import tempfile

    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "tests" / "dashboards")]
    from contract_series import openmetrics

    from tests.support.prometheus_server import PrometheusServer

    end = int(time.time()) - 60
    with (
        tempfile.TemporaryDirectory() as tmp,
        PrometheusServer(Path(tmp), openmetrics=openmetrics(end)) as prom,
    ):
        note = "sample series backfilled into Prometheus, same queries"
        return render(prom.url, d, out, end - minutes * 60, end, note=note)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prometheus", help="Prometheus base URL")
    src.add_argument("--sample", action="store_true", help="render from backfilled sample series")
    ap.add_argument("--dashboard", default="recops-serving", choices=[d.uid for d in DASHBOARDS])
    ap.add_argument("--minutes", type=float, default=25)
    ap.add_argument("--end", type=float, default=None, help="unix time (default: now)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    d = next(d for d in DASHBOARDS if d.uid == a.dashboard)
    out = a.out or Path(__file__).resolve().parent / "img" / f"{d.uid}.png"
    if a.sample:
        drawn = _sample(d, out, a.minutes)
    else:
        end = a.end or time.time()
        drawn = render(a.prometheus, d, out, end - a.minutes * 60, end)
    print(f"{out}: {sum(drawn.values())} series in {len(drawn)} panels")
    return 0 if drawn else 1


if __name__ == "__main__":
    raise SystemExit(main())
