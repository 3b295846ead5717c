"""The report's one HTML page: every figure and table with the settings behind them; inline CSS, no scripts, no
network, images referenced relative to the page (figures/*.png beside it)."""
from __future__ import annotations

import datetime
import html
import json

from jaxleak import storage

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 1.5em auto; padding: 0 1em; color: #111; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; border-bottom: 1px solid #999; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
caption { text-align: left; font-weight: bold; padding-bottom: 0.3em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; white-space: nowrap; }
details > summary { cursor: pointer; font-weight: bold; margin: 1em 0 0.5em; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0.5em 0; flex: 1 1 520px; max-width: 100%; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #333; } .note { font-size: 0.85em; color: #444; } td.more { font-style: italic; }
.warning { background: #fff3cd; border: 1px solid #d4a000; padding: 0.5em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
"""

#: Per section: the tables shown before the figures, and the long ones folded away after them.
_SECTIONS = {"HAR": (("table1_paper_layout", "thesis_table_b1", "ldp_epsilon"), ("table1_classacc", "har_summary")),
             "Eavesdrop": (("tables_III_IV_per_label", "table_VI_compression", "table_V_whole_determination"),
                           ("eavesdrop_summary",))}


def render_page(results, figures, tables, warnings, *, delta: float, rounds: int) -> str:
  esc = html.escape
  prov = storage.provenance()
  out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
         f"<title>jaxleak report: {esc(results.origin)}</title><style>{_CSS}</style></head><body>",
         "<h1>jaxleak report</h1>",
         f"<p>Results: <code>{esc(results.origin)}</code> ({esc(results.kind)}: {len(results.har)} HAR, "
         f"{len(results.eavesdrop)} Eavesdrop, {len(results.whole)} Whole Determination result(s)). epsilon at "
         f"delta = {delta:g}, composed over {rounds} round(s). jaxleak {esc(str(prov.get('jaxleak', '?')))}, "
         f"commit {esc(str(prov.get('git_commit', '?')))}, built {datetime.date.today().isoformat()}.</p>"]
  out += [f"<p class='warning'>{esc(w)}</p>" for w in warnings]
  by_name = {t.name: t for t in tables}
  def table(t):
    return (t.html() + f"<p class='note'>CSV: <a href='tables/{t.name}.csv'>tables/{t.name}.csv</a>, Markdown: "
            f"<a href='tables/{t.name}.md'>tables/{t.name}.md</a></p>")

  for section, (first, folded) in _SECTIONS.items():
    figs = [f for f in figures if f.section == section]
    tabs = [by_name[n] for n in first if n in by_name]
    rest = [by_name[n] for n in folded if n in by_name]
    if not (figs or tabs or rest):
      continue
    out.append(f"<h2>{section}</h2>")
    out += [table(t) for t in tabs]
    out.append("<div class='figures'>")
    for f in figs:
      out.append(f"<figure><img src='{esc(f.path)}' alt='{esc(f.caption)}'><figcaption>{esc(f.caption)} "
                 f"<br>From: {esc(', '.join(map(str, f.sources))[:400])}</figcaption></figure>")
    out.append("</div>")
    out += [f"<details><summary>{esc(t.title)}</summary>{table(t)}</details>" for t in rest]
  out.append("<h2>Settings</h2><p>The configuration of every result drawn above (study.json of a study, the "
             "manifest's config of a run).</p>")
  for source, cfg in results.configs.items():
    out.append(f"<details><summary><code>{esc(str(source))}</code></summary><pre>"
               f"{esc(json.dumps(cfg, indent=1, sort_keys=True, default=str))}</pre></details>")
  out.append("</body></html>\n")
  return "\n".join(out)
