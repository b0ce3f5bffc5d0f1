"""Reports: the terminal table, ``results.json``, and ``report.html`` + ``report.png``.

The table uses rich and the plots matplotlib (both in the ``lab`` extra); without them
the table falls back to plain text and the HTML report is skipped with a message naming
the extra to install.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

__all__ = [
    "MissingExtra",
    "summary_rows",
    "write_html",
    "write_json",
]


class MissingExtra(RuntimeError):
    """An optional dependency of the lab is not installed."""


def write_json(results: dict[str, Any], path: Path) -> Path:
    """Write ``results`` as stable, indented JSON (keys in schema order) to ``path``."""
    path.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path


# -- the table ----------------------------------------------------------------------------


def _fmt(x: Any, scale: float = 1.0, digits: int = 1, suffix: str = "") -> str:
    if x is None:
        return "-"
    return f"{x * scale:.{digits}f}{suffix}"


def _band(
    stat: dict[str, Any],
    scale: float = 1.0,
    digits: int = 1,
    suffix: str = "",
    bands: bool = True,
) -> str:
    mean = stat.get("mean")
    if mean is None:
        return "-"
    lo, hi = stat.get("p5"), stat.get("p95")
    text = _fmt(mean, scale, digits, suffix)
    if bands and lo is not None and hi is not None and (hi - lo) * scale >= 10 ** (-digits):
        text += f" [{_fmt(lo, scale, digits)}-{_fmt(hi, scale, digits)}]"
    return text


def summary_rows(
    results: dict[str, Any], *, bands: bool = True
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side comparison (one row per pipeline).

    With ``bands``, cells show ``mean [p5-p95]`` over seeds where seeds differ.
    """
    scenario = results["scenario"]
    seeds = scenario["seeds"]
    closed = any(p["makespan"]["mean"] is not None for p in results["pipelines"])
    header = ["pipeline", "goodput/s", "success", "p50 ms", "p99 ms", "p99.9 ms", "load x"]
    if closed:
        header += ["server calls", "makespan s"]
    header += ["wasted"]
    for i, fault in enumerate(scenario["faults"]):
        tag = f"F{i + 1}" if len(scenario["faults"]) > 1 else "fault"
        if fault["kind"] == "cache_flush":
            header += [f"{tag} loads/key", f"{tag} max/key", f"{tag} peak/s"]
        else:
            header += [f"{tag} load x"]
        header += [f"{tag} recovered", f"{tag} recover s"]
    rows = []
    for p in results["pipelines"]:
        lat = p["latency"]
        row = [
            p["name"],
            _band(p["goodput"], digits=1, bands=bands),
            _band(p["success_rate"], 100, 2, "%", bands=bands),
            _fmt(lat["p50"]["mean"], 1000, 0),
            _fmt(lat["p99"]["mean"], 1000, 0),
            _fmt(lat["p999"]["mean"], 1000, 0),
            _band(p["amplification"], digits=2, bands=bands),
        ]
        if closed:
            row += [
                _band(p["server_requests"], digits=0, bands=bands),
                _band(p["makespan"], digits=2, bands=bands),
            ]
        row += [_fmt(p["wasted_fraction"]["mean"], 100, 1, "%")]
        for f in p["faults"]:
            if f["kind"] == "cache_flush":
                row += [
                    _band(f["loads_per_key"], digits=2, bands=bands),
                    _band(f["max_loads_per_key"], digits=0, bands=bands),
                    _band(f["peak_load_during"], digits=0, bands=bands),
                ]
            else:
                row += [_band(f["amplification_during"], digits=2, bands=bands)]
            judged = f.get("recovery_judged", True)
            row += [
                f"{f['recovered_seeds']}/{seeds}"
                if judged
                else "n/a: run ends before recovery_hold",
                _band(f["time_to_recover"], digits=0, bands=bands),
            ]
        rows.append(row)
    return header, rows


def print_table(results: dict[str, Any]) -> None:
    """Print the comparison table (rich if installed, else plain text)."""
    header, rows = summary_rows(results, bands=False)
    sc = results["scenario"]
    title = f"{sc['name']}: {sc['seeds']} seed(s), {sc['duration']:g} s virtual"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        print("(install the 'lab' extra for a nicer table: pip install 'buttress[lab]')")
        return
    table = Table(
        title=title,
        caption="means over seeds (5th-95th percentiles in results.json and report.html); "
        "load x = requests seen by the dependency per first try",
    )
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for r in rows:
        table.add_row(*r)
    Console(width=max(100, sum(len(h) for h in header) + 3 * len(header) + 10)).print(table)


# -- plots and HTML -----------------------------------------------------------------------


def _figure(results: dict[str, Any]) -> bytes:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtra(
            "the HTML/PNG report needs matplotlib: pip install 'buttress[lab]'"
        ) from exc
    sc = results["scenario"]
    pipes = results["pipelines"]
    n = len(pipes)
    fig, axes = plt.subplots(
        n, 2, figsize=(13, 2.8 * n + 0.6), squeeze=False, sharex=True, constrained_layout=True
    )
    for row, p in enumerate(pipes):
        s = p["series"]
        w = sc["window"]
        t = [x + w / 2 for x in s["t"]]
        ax, lx = axes[row][0], axes[row][1]
        for a in (ax, lx):
            for f in sc["faults"]:
                a.axvspan(f["start"], f["end"], color="tab:red", alpha=0.12, lw=0)
        ax.plot(t, s["offered"], label="offered to dependency", color="tab:orange")
        ax.plot(t, s["first_tries"], label="first tries", color="tab:gray", ls="--")
        ax.plot(t, s["goodput"], label="goodput", color="tab:green", lw=2)
        ax.set_ylabel("requests/s")
        ax.set_title(f"{p['name']}: load and goodput", fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        p50 = [None if v is None else v * 1000 for v in s["p50"]]
        p99 = [None if v is None else v * 1000 for v in s["p99"]]
        lx.plot(t, p50, label="p50", color="tab:blue")
        lx.plot(t, p99, label="p99", color="tab:purple")
        lx.set_ylabel("latency of successes, ms")
        if any(v for v in p99 if v):
            lx.set_yscale("log")
        lx.set_title(f"{p['name']}: latency", fontsize=10, loc="left")
        lx.grid(alpha=0.3)
        breaker = p["timelines"].get("breaker") or []
        if breaker:
            bx = lx.twinx()
            levels = {"closed": 0, "half_open": 1, "open": 2, "isolated": 3}
            xs = [0.0] + [e[0] for e in breaker] + [sc["duration"]]
            ys = [0] + [levels.get(e[1], 0) for e in breaker]
            ys.append(ys[-1])
            bx.step(xs, ys, where="post", color="tab:red", alpha=0.6, label="breaker")
            bx.set_yticks([0, 1, 2], ["closed", "half", "open"])
        if row == 0:
            ax.legend(fontsize=8, loc="upper right")
            lx.legend(fontsize=8, loc="upper right")
    for a in axes[-1]:
        a.set_xlabel("virtual time, s (faults shaded)")
    fig.suptitle(f"{sc['name']} (mean of {sc['seeds']} seed(s))", fontsize=12)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_html(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.png`` into ``out``.

    Raises:
        MissingExtra: matplotlib is not installed.
    """
    png = _figure(results)
    png_path = out / "report.png"
    png_path.write_bytes(png)
    sc = results["scenario"]
    header, rows = summary_rows(results)
    esc = html.escape
    table = "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
    for r in rows:
        table += "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
    table += "</table>"
    pipes = "".join(
        f"<li><b>{esc(p['name'])}</b> ({esc(p['source'])}): {esc(p['description'])}</li>"
        for p in results["pipelines"]
    )
    faults = "".join(
        f"<li>cache_flush at {f['start']:g} s (per-key loads counted until {f['end']:g} s)</li>"
        if f["kind"] == "cache_flush"
        else f"<li>{esc(f['kind'])} ({esc(f['mode'])}) from {f['start']:g} s to {f['end']:g} s</li>"
        for f in sc["faults"]
    )
    img = base64.b64encode(png).decode("ascii")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>buttress lab: {esc(sc["name"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f4f4f4; }} td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>buttress lab: {esc(sc["name"])}</h1>
<p>{esc(sc["description"])}</p>
<p><b>Reproduces:</b> {esc(sc["reproduces"] or "-")}</p>
<p>{sc["seeds"]} seed(s), {sc["duration"]:g} s of virtual time; values are means over seeds,
with [5th-95th percentile] where seeds differ. "load x" is requests seen by the dependency
per first try; "recovered" counts seeds whose success rate returned to
{sc["recovery"]["threshold"]:.0%} within {sc["recovery"]["within"]:g} s of the fault's end
and held for {sc["recovery"]["hold"]:g} s.</p>
<h2>Faults</h2><ul>{faults or "<li>none</li>"}</ul>
<h2>Pipelines</h2><ul>{pipes}</ul>
<h2>Results</h2>{table}
<h2>Over time</h2>
<img alt="goodput, offered load and latency over time, one row per pipeline"
 src="data:image/png;base64,{img}">
</body></html>
"""
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return html_path, png_path
