"""Reports: every figure the results support, tables holding the results' numbers, a page that references only
files that exist and renders in a real browser, clear refusals of what cannot be reported."""
import csv
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxleak import cli, storage
from jaxleak import report as report_cli
from jaxleak.runs import report as R
from jaxleak.runs.report import tables as T
from jaxleak.runs.report.results import EV_SUMMARY_KEYS, EavesdropResult, HarResult, Results, WholeDetermination

pytest.importorskip("matplotlib")
pytest.importorskip("dp_accounting")

ATTACKS = ("ebi", "llbg", "llg")


def _har(sigma=0.0, tau=0.0, steps=None, n=100, seed=0, dataset="synthetic_wear", sampling="shuffle"):
  rng = np.random.default_rng(seed)
  attacks = {}
  for a in ATTACKS:
    clients = {m: rng.uniform(0.2, 1.0, 4).tolist() for m in ("lnacc", "leacc", "class_acc", "symmetric_existence")}
    conf = rng.integers(0, 9, (3, 3)).tolist()
    attacks[a] = {"clients": clients, "subjects": [1, 2, 3, 4], "confusion": conf,
                  "summary": {m: (float(np.mean(v)), float(np.std(v))) for m, v in clients.items()}}
  settings = dict(dataset=dataset, model="deepconvlstm", state="untrained", sampling=sampling, num_samples=n,
                  local_batch_size=20 if steps else None, local_steps=steps, sigma=sigma, tau=tau, clip_scope="all",
                  ldp_releases=1, seed=1)
  return HarResult(f"har-{sigma}-{tau}-{steps}-{n}", settings, ["NULL", "walk", "run"], attacks)


def _ev(field=None, value=None, seed=0, client_loss="mean"):
  rng = np.random.default_rng(seed)
  settings = dict(dataset="digits", model="cnn", num_participants=100, fraction=0.1, local_epochs=3,
                  local_batch_size=64, local_lr=0.01, compression=0.0, dropout=None, rounds=10, seed=0, replicates=1,
                  client_loss=client_loss)
  if field:
    settings[field] = value
  per_label = {k: rng.uniform(0, 1, 10).tolist() for k in EV_SUMMARY_KEYS}
  if seed == 7:                                          # a record written before the count metric existed
    per_label.update(qi_count_alpha1=[float("nan")] * 10, qi_count_exact=[float("nan")] * 10)
  key = f"ev-{field}-{value}" + ("" if client_loss == "mean" else f"-{client_loss}")
  return EavesdropResult(key, settings, {k: float(np.mean(v)) for k, v in per_label.items()},
                         per_label, 0.5)


def _whole():
  rng = np.random.default_rng(3)
  groups = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
  trials = [{"trial": 0, "stage": s, "round": r, "groups": groups, "predicted": groups, "success": True,
             "ratios": (rng.normal(size=(10, 3)) + np.asarray(groups)[:, None] * 3).tolist()}
            for s, r in ((0.5, 4), (0.85, 20))]
  stages = [{"stage": n, "accuracy_threshold": s, "trials": 1, "reached": 1, "success": 1.0, "success_known_k": 1.0,
             "success_two_level": 1.0, "mean_round": r} for n, s, r in (("middle", 0.5, 4), ("late", 0.85, 20))]
  settings = {**_ev().settings, "model": "mlp", "wd_factors": [1.0, 0.25, 0.2], "wd_total_per_label": 200,
              "wd_window": 3}
  return WholeDetermination("wd", settings, stages, trials)


@pytest.fixture(scope="module")
def everything():
  har = [_har(), _har(0.1, 0.0, seed=1), _har(0.0, 0.5, seed=2), _har(0.1, 0.5, seed=3), _har(0.1, 1.0, seed=4),
         _har(steps=5, seed=5), _har(steps=2, n=500, seed=6)]
  ev = [_ev(seed=7)] + [_ev("compression", c, seed=8 + i) for i, c in enumerate((0.1, 0.3))] \
      + [_ev("local_batch_size", b, seed=20 + i) for i, b in enumerate((8, 20))] \
      + [_ev("local_batch_size", b, seed=30 + i, client_loss="class_weighted") for i, b in enumerate((8, 20))]
  results = Results("/nowhere", "study", har, ev, [_whole()], {"/nowhere": {"name": "hand-made"}})
  return results, R.build(results, delta=1e-5, rounds=1)


def test_every_figure_the_results_support_is_drawn(everything):
  _, rep = everything
  kinds = [re.match(r"figures/([a-z0-9]+-[a-z]+)", f.path).group(1) for f in rep.figures]
  assert kinds.count("fig2-attacks") == 3                 # the runs without LDP (single step, two multi-step)
  assert kinds.count("fig4-confusion") == 7               # every setting
  assert kinds.count("fig3-multistep") == 1 and kinds.count("ldp-tradeoff") == 1
  assert {"eavesdrop-compression", "eavesdrop-local", "wd-ratios", "wd-dendrogram"} <= set(kinds)
  local = [f for f in rep.figures if f.path.startswith("figures/eavesdrop-local-batch-size")]
  assert [("class-weighted" in f.caption, "crosses" in f.caption) for f in local] == [(False, True), (True, False)]
  for f in rep.figures:
    assert rep.files[f.path][:8] == b"\x89PNG\r\n\x1a\n" and len(rep.files[f.path]) > 5000, f.path


def test_a_large_ldp_sweep_is_one_heat_map_figure_not_a_figure_per_setting(monkeypatch):
  # Found 2026-12-06 (thirty-fifth session): the report of a 1,000-setting LDP sweep drew 1,000 confusion figures
  # (9 min 25 s on 2 cores) and a trade-off figure of 25 panels with 40 overlapping tick labels each.
  sigmas, taus = (0.0, 0.01, 0.03, 0.1, 0.3), (0.0, 0.5, 1.0)
  grid = [_har(s, t, seed=i) for i, (s, t) in enumerate((s, t) for s in sigmas for t in taus)]   # 14 LDP + none
  drawn = []
  monkeypatch.setattr(R.F, "ldp_heatmap", lambda pts, **k: drawn.append(pts) or b"\x89PNG\r\n\x1a\n")
  rep = R.build(Results("/nowhere", "study", grid, [], [], {}))
  kinds = [re.match(r"figures/([a-z0-9]+-[a-z]+)", f.path).group(1) for f in rep.figures]
  assert sorted(kinds) == ["fig2-attacks", "fig4-confusion", "ldp-sweep"]     # confusion: the setting without LDP
  assert [len(pts) for pts in drawn] == [15]
  assert any("14 LDP settings belong to sweeps of more than 12" in w for w in rep.warnings)
  assert "har_defences" not in [t.name for t in rep.tables]          # was: a column per LDP setting
  small = grid[:6]                                       # sigma 0 and 0.01: 5 LDP settings, the paper's size
  rep = R.build(Results("/nowhere", "study", small, [], [], {}))
  kinds = [re.match(r"figures/([a-z0-9]+-[a-z]+)", f.path).group(1) for f in rep.figures]
  assert sorted(kinds) == ["fig2-attacks"] + ["fig4-confusion"] * 6 + ["ldp-tradeoff"] and not rep.warnings
  defences = next(t for t in rep.tables if t.name == "har_defences")
  assert defences.columns == ["setting", "attack", "none", "LDP sigma=0 tau=0.5", "LDP sigma=0 tau=1", "LDP sigma=0.01",
                              "LDP sigma=0.01 tau=0.5", "LDP sigma=0.01 tau=1"]


def test_the_heat_map_puts_every_setting_in_its_cell():
  plt = R.F.pyplot()
  sigmas, taus = (0.0, 0.01, 0.1), (0.0, 0.5, 1.0, 1.5)
  grid = [_har(s, t, seed=i) for i, (s, t) in enumerate((s, t) for s in sigmas for t in taus) if (s, t) != (0.1, 1.5)]
  shown = {}
  real = plt.Axes.imshow

  def imshow(ax, data, **kw):
    shown[ax.get_title() or len(shown)] = np.array(data)
    return real(ax, data, **kw)
  import unittest.mock
  with unittest.mock.patch.object(plt.Axes, "imshow", imshow):
    png = R.F.ldp_heatmap(grid)
  assert png[:8] == b"\x89PNG\r\n\x1a\n"
  assert len(shown) == len(ATTACKS)
  for k, cells in enumerate(shown.values()):          # rows: tau 0.5, 1, 1.5, then none; columns: sigma ascending
    attack = ATTACKS[k]
    assert cells.shape == (4, 3)
    for r in grid:
      i = [0.5, 1.0, 1.5, 0.0].index(r.settings["tau"])
      j = list(sigmas).index(r.settings["sigma"])
      assert cells[i, j] == pytest.approx(100 * r.attacks[attack]["summary"]["lnacc"][0])
    assert np.isnan(cells[2, 2]) and np.isfinite(cells).sum() == 11     # the setting not run: blank


def _csv(text):
  return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("num_rows,shown", [(3, 3), (T.MAX_HTML_ROWS, T.MAX_HTML_ROWS),
                                             (T.MAX_HTML_ROWS + 1, T.MAX_HTML_ROWS), (10_000, T.MAX_HTML_ROWS)])
def test_the_page_shows_a_tables_first_rows_and_its_files_every_row(num_rows, shown):
  table = T.Table("sweep", "A sweep", ["sigma", "LnAcc"], [[i, 0.5] for i in range(num_rows)], percent=("LnAcc",))
  page = table.html()
  cells = re.findall(r"<tr><td>(\d+)</td><td>50.00</td></tr>", page)
  assert cells == [str(i) for i in range(shown)]                     # the first rows, in order
  more = num_rows - shown
  assert (f"... and {more:,} more row{'s' * (more > 1)}: all {num_rows:,} in tables/sweep.csv" in page) == (more > 0)
  assert len(_csv(table.csv())) == num_rows and table.markdown().count("| 50.00 |") == num_rows


def test_a_cell_with_nothing_to_score_shows_a_dash_and_says_so_and_the_csv_keeps_nan():
  """Found 2026-12-07 (thirty-seventh session): a rate over no rounds (Class Sniffing on rounds a label was absent,
  when it never was) printed as 'nan' in the tables, which reads like a failure."""
  from jaxleak.runs.tables import UNDEFINED_NOTE
  table = T.Table("t", "T", ["label", "rate"], [["a", 0.5], ["b", float("nan")]], percent=("rate",), note="n.")
  assert "| b | - |" in table.markdown() and table.markdown().rstrip().endswith("n.\n" + UNDEFINED_NOTE)
  assert "<td>-</td>" in table.html() and f"<p class='note'>{html.escape(UNDEFINED_NOTE)}</p>" in table.html()
  assert _csv(table.csv())[1]["rate"] == "nan"
  plain = T.Table("t", "T", ["label", "rate"], [["a", 0.5]], percent=("rate",))
  assert "nothing to score" not in plain.markdown() + plain.html()


def test_table_numbers_are_the_results_numbers(everything):
  results, rep = everything
  rows = _csv(rep.files["tables/har_summary.csv"])
  assert len(rows) == len(results.har) * len(ATTACKS)
  for (har, attack), row in zip([(r, a) for r in results.har for a in r.attacks], rows):
    want = har.attacks[attack]["summary"]
    assert row["attack"] == T.attack_name(attack) and float(row["sigma"]) == har.settings["sigma"]
    assert (float(row["LnAcc"]), float(row["LnAcc std"])) == want["lnacc"]
    assert (float(row["ClassAcc"]), float(row["ClassAcc std"])) == want["class_acc"]
  ev = {r.source: r for r in results.eavesdrop}
  comp = _csv(rep.files["tables/table_VI_compression.csv"])
  assert [float(r["CR"]) for r in comp] == [0.0, 0.1, 0.3]
  assert float(comp[1]["success"]) == ev["ev-compression-0.1"].overall["qi_alpha1"]
  assert float(comp[1]["success (count)"]) == ev["ev-compression-0.1"].overall["qi_count_alpha1"]
  assert float(comp[1]["paper success"]) == 0.95 and float(comp[1]["paper aborted"]) == 0.03   # Table VI
  per_label = _csv(rep.files["tables/tables_III_IV_per_label.csv"])
  paper_sniff = [r for r in per_label if r["source"] == "paper: MNIST CNN" and "Sniffing" in r["attack"]][0]
  assert [round(100 * float(paper_sniff[str(i)])) for i in range(10)] == [96, 97, 98, 93, 96, 95, 95, 96, 98, 94]
  counted = [r for r in per_label if "rounded to a count" in r["attack"]]
  # One row per federation of Tables III-IV (the L_bs points too) except the record without the count metric.
  assert sorted(r["source"].split("L_bs=")[1] for r in counted) == ["20 L_ep=3", "8 L_ep=3"]
  # Table 1's family rows: each client's ClassAcc averaged over the family, then mean over clients.
  base = results.har[0]
  bias = np.mean([base.attacks[a]["clients"]["class_acc"] for a in ("ebi", "llbg")], axis=0)
  t1 = _csv(rep.files["tables/table1_classacc.csv"])
  row = [r for r in t1 if r["attack"].startswith("bias-based") and r["N"] == "100"][0]
  assert float(row["ClassAcc"]) == pytest.approx(bias.mean(), abs=1e-12)


def test_every_ldp_setting_has_its_epsilon(everything):
  from jaxleak import accounting
  _, rep = everything
  rows = {(float(r["sigma"]), r["tau"]): r for r in _csv(rep.files["tables/ldp_epsilon.csv"])}
  assert set(rows) == {(0.1, ""), (0.0, "0.5"), (0.1, "0.5"), (0.1, "1.0")}
  assert float(rows[(0.1, "0.5")]["epsilon (composed, exact)"]) == accounting.gaussian_epsilon(0.1, 0.5,
                                                                                               method="exact").value
  assert float(rows[(0.1, "0.5")]["epsilon (composed, RDP)"]) == accounting.gaussian_epsilon(0.1, 0.5,
                                                                                             method="rdp").value
  assert rows[(0.1, "")]["note"] == "no clipping: unbounded sensitivity"
  assert rows[(0.0, "0.5")]["note"] == "no noise: a deterministic release"
  summary = _csv(rep.files["tables/har_summary.csv"])
  assert {r["epsilon"] for r in summary if r["sigma"] == "0.1" and r["tau"] == "1.0"} == {
      f"{accounting.gaussian_epsilon(0.1, 1.0, method='exact').value:.3g}"}
  assert {r["epsilon"] for r in summary if r["sigma"] == "0.1" and r["tau"] == "0.0"} == {"inf (no clip)"}


def test_the_page_references_only_files_that_exist(everything, tmp_path):
  _, rep = everything
  storage.commit_folder(str(tmp_path / "rep"), rep.files)
  page = (tmp_path / "rep" / "index.html").read_text()
  refs = re.findall(r"(?:src|href)='([^']+)'", page)
  assert len([r for r in refs if r.endswith(".png")]) == len(rep.figures)
  for ref in refs:
    assert (tmp_path / "rep" / ref).is_file(), ref
  assert "<script" not in page and "http" not in page.replace("http-equiv", "")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_CHECK = ("<script>window.addEventListener('load',()=>{const im=[...document.images];const bad=im.filter(i=>!("
          "i.complete&&i.naturalWidth>0)).map(i=>i.getAttribute('src'));const p=document.createElement('pre');"
          "p.id='jaxleak-check';p.textContent=JSON.stringify({total:im.length,broken:bad});"
          "document.body.appendChild(p);});</script>")


def _rendered_images(folder):
  """Loads a copy of the page with a probe script in headless Chromium: {'total': n, 'broken': [src...]}."""
  page = (folder / "index.html").read_text()
  (folder / "check.html").write_text(page.replace("</body>", _CHECK + "</body>"))
  proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         f"--user-data-dir={folder.parent / 'chromium-profile'}", "--virtual-time-budget=10000",
                         "--dump-dom", (folder / "check.html").as_uri()], capture_output=True, text=True, timeout=120)
  found = re.search(r'<pre id="jaxleak-check">([^<]*)</pre>', proc.stdout)
  assert found, proc.stderr[-2000:]
  return json.loads(found.group(1))


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("JAXLEAK_REQUIRE_BROWSER"),
                    reason="no chromium here (CI installs it and sets JAXLEAK_REQUIRE_BROWSER=1)")
def test_every_image_renders_in_a_real_browser(everything, tmp_path):
  assert CHROMIUM, "JAXLEAK_REQUIRE_BROWSER is set but chromium is not installed (apt-get install chromium)"
  _, rep = everything
  storage.commit_folder(str(tmp_path / "rep"), rep.files)
  seen = _rendered_images(tmp_path / "rep")
  assert seen == {"total": len(rep.figures), "broken": []}
  os.remove(tmp_path / "rep" / rep.figures[0].path)           # the probe can fail: a missing figure is caught
  assert _rendered_images(tmp_path / "rep")["broken"] == [rep.figures[0].path]


def test_missing_plots_extra_is_named_before_any_work(monkeypatch, tmp_path, capsys):
  monkeypatch.setitem(sys.modules, "matplotlib", None)
  rc = cli.call(report_cli.main, report_cli.FLAGS, [str(tmp_path)])
  assert rc == 2 and "pip install 'jaxleak[plots]'" in capsys.readouterr().err


def test_missing_accounting_extra_is_said_in_the_tables(monkeypatch):
  from jaxleak import accounting
  monkeypatch.setitem(sys.modules, "dp_accounting", None)
  accounting._epsilon.cache_clear()
  results = Results("/nowhere", "runs", [_har(0.1, 0.5, seed=9)], [], [], {})
  acct = T.Accountant()
  tabs = {t.name: t for t in T.all_tables(results, acct)}
  accounting._epsilon.cache_clear()
  row = tabs["ldp_epsilon"].rows[0]                # the exact columns need no extra; the RDP column says so
  assert row[4:7] == [accounting.gaussian_epsilon(0.1, 0.5, method="exact").value] * 2 + [
      "n/a: install jaxleak[accounting]"]
  assert "jaxleak[accounting]" in acct.missing_extra and "the exact epsilon needs no extra" in acct.missing_extra


def _run_folder(files):
  def setup(p):
    (p / "run").mkdir()
    for name, text in files.items():
      (p / "run" / name).write_text(text)
  return setup


_MANIFEST = ('{"experiment": "single_step_leakage", "config": {"dataset": "x", "model": "m", "sampling": "s", '
             '"num_samples": 1}}')


@pytest.mark.parametrize("setup,message", [
    (lambda p: None, "holds no results"),
    # Found 2026-12-04 (fourteenth session): "report folder .../summary.csv/report: ... is a file, not a folder".
    (lambda p: (p / "summary.csv").write_text("x") and p / "summary.csv",
     "summary.csv is a file; give the folder that holds it"),
    (_run_folder({"manifest.json": "{not json"}), "not a readable JSON"),
    (_run_folder({"manifest.json": '{"experiment": "bogus"}'}), "unknown experiment 'bogus'"),
    (_run_folder({"manifest.json": _MANIFEST}), "clients.csv: no such clients table"),
    (_run_folder({"manifest.json": _MANIFEST, "clients.csv": "subject,attack\n1,ebi\n"}), "missing columns ['lnacc'"),
    (_run_folder({"manifest.json": _MANIFEST, "clients.csv": "subject,attack,lnacc,leacc,class_acc,"
                  "symmetric_existence\n1,ebi,x,1,1,1\n"}), "'x' is not a number"),
])
def test_unreportable_folders_are_refused_in_one_line(setup, message, tmp_path, capsys):
  source = setup(tmp_path) or tmp_path
  rc = cli.call(report_cli.main, report_cli.FLAGS, [str(source)])
  err = capsys.readouterr().err
  assert rc == 2 and message in err and "Traceback" not in err, err
  assert not (tmp_path / "report").exists()


def test_table1_in_the_paper_layout_averages_each_client_over_attacks_and_models():
  a, b = _har(seed=30), _har(seed=31)
  b.settings["model"] = "tinyhar"
  c = _har(seed=32, sampling="sequential")
  t = T.table1_paper_layout(Results("/x", "runs", [a, b, c], [], [], {}))
  per_client = np.mean([r.attacks[n]["clients"]["class_acc"] for r in (a, b) for n in ("ebi", "llbg")], axis=0)
  row = {r[0]: dict(zip(t.columns, r)) for r in t.rows}["bias-based"]
  assert row["state"] == "U" and row["synthetic_wear shuffle"] == pytest.approx(per_client.mean(), abs=1e-12)
  assert row["synthetic_wear shuffle std"] == pytest.approx(per_client.std(), abs=1e-12)
  weight = np.asarray(c.attacks["llg"]["clients"]["class_acc"])
  assert {r[0]: dict(zip(t.columns, r)) for r in t.rows}["weight-based"]["synthetic_wear sequential"] == \
      pytest.approx(weight.mean(), abs=1e-12)


def test_per_step_ldp_of_a_multi_step_run_composes_over_its_steps(tmp_path):
  run = tmp_path / "ms"
  run.mkdir()
  ldp = {"noise_std": 0.2, "clip_norm": 1.0, "clip_scope": "all"}
  manifest = {"experiment": "multi_step_leakage", "dataset": "synthetic_tiny", "class_names": ["a", "b"],
              "config": {"dataset": "synthetic_tiny", "model": "tinyhar", "sampling": "shuffle", "num_samples": 50,
                         "seed": 1, "ldp": {"noise_std": 0.0, "clip_norm": float("inf")},
                         "local": {"steps": 5, "batch_size": 10, "ldp": ldp}}}
  (run / "manifest.json").write_text(storage.json_text(manifest))
  (run / "clients.csv").write_text("subject,attack,lnacc,leacc,class_acc,symmetric_existence\n1,ebi,0.5,1,0.5,1\n")
  results = R.load(str(tmp_path))
  (har,) = results.har
  assert (har.settings["sigma"], har.settings["tau"], har.settings["ldp_releases"]) == (0.2, 1.0, 5)
  from jaxleak import accounting
  (row,) = T.ldp_table(results, T.Accountant(rounds=3)).rows
  assert row[3] == 15 and row[5] == accounting.gaussian_epsilon(0.2, 1.0, releases=15, method="exact").value
  assert row[4] == accounting.gaussian_epsilon(0.2, 1.0, method="exact").value


def test_a_run_folder_edited_since_it_was_written_is_refused(tmp_path, capsys):
  from jaxleak.runs import leakage as L
  run = L.run_leakage(L.LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_clients=1, attacks=("ebi",)))
  L.write_runs({"": run}, str(tmp_path / "run"), 1.0, {})
  assert cli.call(report_cli.main, report_cli.FLAGS, [str(tmp_path / "run")]) == 0
  clients = tmp_path / "run" / "clients.csv"
  clients.write_text(clients.read_text().replace(",0.", ",0.9", 1))      # a number changed by hand
  rc = cli.call(report_cli.main, report_cli.FLAGS, [str(tmp_path / "run"), f"--output_dir={tmp_path / 'r'}"])
  err = capsys.readouterr().err
  assert rc == 2 and "run/clients.csv has changed since jaxleak wrote it" in err, err
  assert not (tmp_path / "r").exists()


def test_a_damaged_study_record_is_left_out_and_named_on_the_page(tmp_path):
  (tmp_path / "records").mkdir()
  (tmp_path / "records" / "abc.json").write_text("{damaged")
  (tmp_path / "records" / "f00d.json").write_text('{"x": 1}')            # valid JSON, not a jaxleak record
  (tmp_path / "records" / ".tmp-x1y2-def.json").write_text("{half")    # a writer killed mid-write: not a record
  results = R.load(str(tmp_path))
  assert results.kind == "study" and results.missing == 0 and results.empty
  assert results.damaged == [str(tmp_path / "records" / "abc.json"), str(tmp_path / "records" / "f00d.json")]
  page = R.build(results).files["index.html"]
  assert "2 record file(s) failed verification (damaged, or not written by jaxleak) and are left out" in page
  assert "no record yet" not in page                                    # nothing planned is missing


def test_an_eavesdrop_record_without_the_count_columns_reads_them_as_nan(tmp_path):
  from jaxleak.runs import eavesdrop as EV
  owners = np.array([[2, 1], [3, 0]])
  z = np.zeros((2, 2))
  res = EV.RoundsResult(owners=owners, holders=owners, sniff_score=z, sniff_present=owners > 0,
                        qi_estimate=np.array([[2.4, 1.0], [4.4, 0.0]]), qi_std=z, qi_num_weights=z,
                        qi_aborted=np.zeros((2, 2), bool), variables={}, seconds_per_round=1.0)
  cfg = EV.EavesdropConfig(dataset="digits", rounds=2)
  files, s = EV.rounds_files(res, cfg)
  old = [line.split(",")[:8] for line in files["summary.csv"].splitlines()]   # label + the 7 older columns
  files["summary.csv"] = "\n".join(",".join(r) for r in old) + "\n"
  storage.commit_folder(str(tmp_path / "old"), files)
  storage.commit_folder(str(tmp_path / "new"), EV.rounds_files(res, cfg)[0])
  loaded = {r.source: r for r in R.load(str(tmp_path)).eavesdrop}
  # 3 owned pairs: 2.4 vs 2, 1.0 vs 1 within 1, 4.4 vs 3 not; as counts 2, 1, 4: all within 1, two exact.
  assert np.isnan(loaded["old"].overall["qi_count_alpha1"])
  assert loaded["old"].overall["qi_alpha1"] == loaded["new"].overall["qi_alpha1"] == pytest.approx(2 / 3, abs=1e-4)
  assert loaded["new"].overall["qi_count_alpha1"] == 1.0
  assert loaded["new"].overall["qi_count_exact"] == pytest.approx(2 / 3, abs=1e-4) == s["overall"]["qi_count_exact"]
  # benchmarks/qi_readings.py rescores stored rounds.csv files with the same function, old records included.
  out = subprocess.run([sys.executable, "benchmarks/qi_readings.py", str(tmp_path)], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), check=True).stdout
  rows = {line.split()[0].rsplit("/", 1)[1]: line.split()[1:6] for line in out.splitlines() if str(tmp_path) in line}
  assert rows["old"] == rows["new"] == ["2", "66.7", "100.0", "66.7", "0.0"]


def test_a_folder_of_links_to_results_reads_each_once(tmp_path):
  """Found 2026-12-07 (thirty-eighth session): a folder of symbolic links to studies (gathered from a cluster's
  scratch) said "holds no results"; links are followed now, a folder linked twice or a link back up read once."""
  from jaxleak.runs import eavesdrop as EV
  owners = np.array([[2, 1], [3, 0]])
  z = np.zeros((2, 2))
  res = EV.RoundsResult(owners=owners, holders=owners, sniff_score=z, sniff_present=owners > 0,
                        qi_estimate=np.array([[2.4, 1.0], [4.4, 0.0]]), qi_std=z, qi_num_weights=z,
                        qi_aborted=np.zeros((2, 2), bool), variables={}, seconds_per_round=1.0)
  storage.commit_folder(str(tmp_path / "scratch" / "run"), EV.rounds_files(res, EV.EavesdropConfig(dataset="digits",
                                                                                                  rounds=2))[0])
  (tmp_path / "gathered").mkdir()
  os.symlink(tmp_path / "scratch" / "run", tmp_path / "gathered" / "a")
  os.symlink(tmp_path / "scratch" / "run", tmp_path / "gathered" / "b")          # the same run, linked twice
  os.symlink(tmp_path / "gathered", tmp_path / "gathered" / "loop")             # a link back up
  assert [r.source for r in R.load(str(tmp_path / "gathered")).eavesdrop] == ["a"]


def test_a_report_never_replaces_the_results_it_reads(tmp_path, capsys):
  # Before 2026-12-04 --output_dir=<study> replaced the study folder with the report, and --output_dir=<study>/records
  # the records folder: every record was deleted.
  from jaxleak import storage
  storage.commit_folder(str(tmp_path / "run"), {"manifest.json": _MANIFEST})          # as a run writes it
  for out, message in ((tmp_path, "holds the results it reports"), (tmp_path.parent, "holds the results it reports"),
                       (tmp_path / "run", "holds results")):
    rc = cli.call(report_cli.main, report_cli.FLAGS, [str(tmp_path), f"--output_dir={out}"])
    assert rc == 2 and message in capsys.readouterr().err
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "notes.txt").write_text("x")
  rc = cli.call(report_cli.main, report_cli.FLAGS, [str(tmp_path / "run"), f"--output_dir={tmp_path / 'mine'}"])
  assert rc == 2 and "(it holds notes.txt)" in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ["mine", "run"]
  assert sorted(os.listdir(tmp_path / "run")) == [storage.FOLDER_MARKER, "manifest.json"]


def test_every_registered_attack_has_a_name_and_a_place_in_the_reports():
  # An attack registered later (bias_corrected, yin) would otherwise appear under its key, sorted after the rest.
  import jaxleak.attacks as A
  from jaxleak.runs.report.results import ATTACK_ORDER
  assert set(A.names()) <= set(T.ATTACK_NAMES) and set(A.names()) <= set(ATTACK_ORDER)


def test_table1_families_average_the_papers_attacks_only():
  """The paper's Table 1 averages bias-based (EBI, LLBG, iLRG) and weight-based (LLG, LLG*) attacks. Found
  2026-12-06 (thirty-first session): the families were every attack reading the bias or the weights, so a baseline
  run beside them (analytic reads the bias; iDLG, Yin and RLU the weights) moved the paper's averages."""
  from types import SimpleNamespace
  acc = lambda *v: {"clients": {"class_acc": list(v)}}
  r = SimpleNamespace(attacks={"ebi": acc(0.2, 0.4), "ilrg": acc(0.6, 0.8), "analytic": acc(1.0, 1.0),
                               "llg": acc(0.1, 0.3), "idlg": acc(1.0, 1.0), "yin": acc(1.0, 1.0),
                               "rlu": acc(1.0, 1.0), "random": acc(1.0, 1.0)})
  np.testing.assert_allclose(T._family_per_client(r, "bias"), [0.4, 0.6])
  np.testing.assert_allclose(T._family_per_client(r, "weight"), [0.1, 0.3])
  assert T._family_per_client(SimpleNamespace(attacks={"analytic": acc(1.0)}), "bias") is None
