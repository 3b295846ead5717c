"""The study engine: plans, sweeps in one compilation, records equal to separate runs, Whole Determination tasks,
shards, collect, bad input."""
import csv
import json
import re
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxleak.attacks as A
from jaxleak import LastLayerGrads, LastLayerParams, cli, storage
from jaxleak import metrics as M
from jaxleak import study as study_cli
from jaxleak.runs import leakage as L
from jaxleak.runs import study as S
from jaxleak.runs.report import tables as T
from jaxleak.runs.study import collect, engine
from jaxleak.runs.study import store as store_lib
from tests.helpers import deepconvlstm_forward_flops

TINY = {"datasets": "synthetic_tiny", "models": "tinyhar", "states": "untrained", "num_clients": "2"}


def test_paper_grid_has_the_papers_312_invocations_in_96_gradient_passes():
  plan = S.make_plan(S.preset("har_paper"), check_inputs=False)
  assert len(plan.tasks) == 312 and len(plan.groups) == 24 + 72
  ldp_groups = [g for g in plan.groups if len(g.tasks) > 1]
  assert len(ldp_groups) == 24 and {len(g.tasks) for g in ldp_groups} == {10}       # none + 9 settings share a pass
  assert len({t.key for t in plan.tasks}) == 312


def test_shards_partition_the_groups():
  plan = S.make_plan(S.preset("har_paper"), check_inputs=False)
  shards = [plan.shard(i, 7) for i in range(7)]
  keys = [g.key for s in shards for g in s.groups]
  assert sorted(keys) == sorted(g.key for g in plan.groups) and len(set(keys)) == len(keys)
  with pytest.raises(ValueError, match="task_index"):
    plan.shard(7, 7)


def test_a_changed_setting_is_a_new_task():
  a = S.make_plan(S.override(S.preset("har_sampling"), TINY), check_inputs=False)
  b = S.make_plan(S.override(S.preset("har_sampling"), {**TINY, "num_samples": "50"}), check_inputs=False)
  assert not {t.key for t in a.tasks} & {t.key for t in b.tasks}



def test_a_study_takes_attack_groups_and_stores_the_names_they_stand_for():
  study = S.override(S.preset("har_sampling"), {**TINY, "attacks": "paper,gcd,ebi"})
  assert {p.attacks for p in study.parts} == {("llg", "llg_star", "ebi", "llbg", "ilrg", "gcd")}
  assert {p.attacks for p in S.override(S.preset("har_sampling"), {**TINY, "attacks": "all"}).parts} == {A.names()}
  with pytest.raises(ValueError, match=r"--set attacks=all,nope: attacks: unknown \['nope'\]; .*or a group: all"):
    S.override(S.preset("har_sampling"), {**TINY, "attacks": "all,nope"})
  bias_free = {**TINY, "head_bias": "false"}
  assert S.make_plan(S.override(S.preset("har_sampling"), {**bias_free, "attacks": "weight"}), check_inputs=False)
  with pytest.raises(ValueError, match=r"drop them from --set attacks=\.\.\. \(attacks=weight: every attack"):
    S.make_plan(S.override(S.preset("har_sampling"), {**bias_free, "attacks": "all"}), check_inputs=False)

def test_fields_read_by_some_tasks_go_to_the_parts_that_read_them():
  # har_paper: sampling (ldp (0, 0)), LDP (nine pairs), multi-step (three triples); before, `--set ldp=...` or
  # `--set multi_step=...` reached every part and was refused as "multi_step and ldp in one grid".
  untrained = {**TINY, "states": "untrained"}
  study = S.override(S.preset("har_paper"), {**untrained, "ldp": "0:0,0.1:1", "multi_step": "20:10:2",
                                             "local_lr": "0.01", "num_samples": "50"})
  sampling, ldp, multi = study.parts
  assert sampling.ldp == ldp.ldp == ((0.0, 0.0), (0.1, 1.0)) and multi.ldp == ((0.0, 0.0),)
  assert multi.multi_step == ((20, 10, 2),) and sampling.multi_step == ldp.multi_step == ()
  assert multi.local_lr == 0.01 and sampling.local_lr == ldp.local_lr == 1e-4
  assert sampling.num_samples == ldp.num_samples == 50 and multi.num_samples == 100
  plan = S.make_plan(study, check_inputs=False)
  assert {(t.config["sigma"], t.config["tau"], t.config["num_samples"], t.config["local_lr"]) for t in plan.tasks} \
      == {(0.0, 0.0, 50, None), (0.1, 1.0, 50, None), (0.0, 0.0, 20, 0.01)}
  # har_defences: the scope goes to the one part that clips; the others keep the default (and validate)
  defences = S.override(S.preset("har_defences"), {**untrained, "clip_scope": "last_layer"})
  assert [p.clip_scope for p in defences.parts] == ["all", "all", "last_layer", "all", "all"]
  # a study with no multi-step part is converted, and then reads local_lr
  converted = S.override(S.preset("har_sampling"), {**untrained, "multi_step": "20:10:2", "local_lr": "0.01"})
  assert converted.parts[0].multi_step == ((20, 10, 2),) and converted.parts[0].local_lr == 0.01
  # a grid built in Python is held to the same: a value no task reads is refused
  for field, value in (("local_lr", 0.01), ("clip_scope", "last_layer"), ("checkpoint_dir", "x")):
    with pytest.raises(ValueError, match=f"{field}={value} is read only by"):
      S.HarGrid(states=("untrained",), **{field: value}).validate()
  with pytest.raises(ValueError, match="num_samples=50 is read only by single-step tasks"):
    S.HarGrid(num_samples=50, multi_step=((100, 20, 5),)).validate()


def test_eavesdrop_fields_whole_determination_does_not_read_go_to_the_other_parts():
  study = S.override(S.preset("eavesdrop_paper"), {"rounds": "5", "sniff_margin": "0.3", "replicates": "2"})
  for part in study.parts:
    base = dict(part.base)
    if isinstance(part, S.WholeDeterminationGrid):
      assert "rounds" not in base and "sniff_margin" not in base and part.replicates == 1
    else:
      assert base["rounds"] == 5 and base["sniff_margin"] == 0.3 and part.replicates == 2
  S.make_plan(study, check_inputs=False)
  # a grid built in Python is refused when planned
  wd = S.WholeDeterminationGrid(base=(("rounds", 5),), axes=(("model", ("mlp",)),))
  with pytest.raises(ValueError, match="rounds=5: not read by Whole Determination"):
    S.make_plan(S.Study("wd", (wd,)), check_inputs=False)


def test_dirichlet_axis_adds_tasks_and_leaves_other_keys_alone():
  plain = S.make_plan(S.override(S.preset("har_sampling"), TINY), check_inputs=False)
  for field in ("dirichlet_alpha", "head_bias", "compression", "dropout"):   # keys of existing studies do not move
    assert all(field not in t.config for t in plain.tasks)
  noniid = S.make_plan(S.override(S.preset("har_dirichlet"), {**TINY, "dirichlet_alphas": "0.2,5"}),
                       check_inputs=False)
  assert len(noniid.tasks) == 2 * len(plain.tasks)
  assert sorted({t.config["dirichlet_alpha"] for t in noniid.tasks}) == [0.2, 5.0]
  assert "Dir(0.2)" in noniid.groups[0].label or "Dir(5)" in noniid.groups[0].label
  assert engine.leakage_config(noniid.tasks[0].config).dirichlet_alpha == noniid.tasks[0].config["dirichlet_alpha"]
  defences = S.make_plan(S.override(S.preset("har_defences"), TINY), check_inputs=False)
  configs = [engine.leakage_config(t.config, t.config["sigma"], t.config["tau"]) for t in defences.tasks]
  assert {(c.head_bias, c.compression, c.dropout, c.ldp.is_identity) for c in configs} == {
      (True, 0.0, None, True), (False, 0.0, None, True), (True, 0.0, None, False), (True, 0.9, None, True),
      (True, 0.0, 0.8, True)}
  from jaxleak.runs.leakage.prepare import prepare
  dropped = next(c for c in configs if c.dropout == 0.8)
  assert prepare(dropped, None, None, None).model.dropout == 0.8
  with pytest.raises(ValueError, match="dropout"):
    L.LeakageConfig(dropout=1.0).validate()
  ev = S.make_plan(S.preset("eavesdrop_dirichlet"), check_inputs=False)
  assert sorted(engine.eavesdrop_config(t.config).dirichlet_alpha for t in ev.tasks) == [0.1, 0.3, 1.0, 10.0]
  assert {engine.eavesdrop_config(t.config).partition for t in ev.tasks} == {"dirichlet"}


def test_attacks_set_on_har_defences_keep_the_bias_free_head_to_those_it_can_run():
  """Found 2026-12-07 (thirty-seventh session): `run har_defences --set attacks=paper` was refused ("head_bias=false
  with attacks ['ebi', 'llbg', 'ilrg'] ...; drop them"), since the list went to the bias-free-head part too, and
  dropping them would drop them from every defence. That part now runs the attacks given that read no bias
  gradient, as the preset itself chooses there; a list of bias readers alone is refused, naming the part."""
  study = S.override(S.preset("har_defences"), {**TINY, "attacks": "paper,rlu"})
  runs = {p.head_bias: p.attacks for p in study.parts}
  assert runs == {True: ("llg", "llg_star", "ebi", "llbg", "ilrg", "rlu"), False: ("llg", "llg_star", "rlu")}
  plan = S.make_plan(study, check_inputs=False)
  assert {tuple(t.config["attacks"]) for t in plan.tasks if not t.config.get("head_bias", True)} == {
      ("llg", "llg_star", "rlu")}
  with pytest.raises(ValueError, match=re.escape("--set attacks=ebi,llbg: har_defences's bias-free-head part "
                                                 "(head_bias=false) can run none of ['ebi', 'llbg']")):
    S.override(S.preset("har_defences"), {"attacks": "ebi,llbg"})
  with pytest.raises(ValueError, match=re.escape("head_bias=false with attacks ['ebi', 'llbg', 'ilrg']")):
    S.make_plan(S.override(S.preset("har_sampling"), {**TINY, "attacks": "paper", "head_bias": "false"}),
                check_inputs=False)                              # where the user asks for both: refused as before


def _random_inputs(k=6, d=8, c=5):
  key = jax.random.key(0)
  grads = LastLayerGrads(kernel=0.1 * jax.random.normal(key, (k, d, c)), bias=0.1 * jax.random.normal(key, (k, c)))
  keys = jax.random.split(key, k)
  head = LastLayerParams(kernel=jnp.zeros((k, d, c)), bias=jnp.zeros((k, c)))
  star = {"wainakh": A.LLGStarParams(impact=jnp.full((k,), -0.01), offsets=jnp.zeros((k, c)))}
  return grads, jnp.ones(k), keys, keys, star, head


def test_compilations_do_not_grow_with_the_number_of_settings():
  inputs = _random_inputs()
  names = ("ebi", "llg_star", "ilrg", "llbg")
  run = lambda n: engine.sweep_settings(*inputs, [(0.01 * (i % 7), 0.1 * (i % 5)) for i in range(n)], names=names,
                                        num_samples=20, scope="all")
  out10 = run(10)
  after10 = engine.sweep_chunk._cache_size()
  out1000 = run(1000)
  assert engine.sweep_chunk._cache_size() == after10
  assert out1000["ebi"].shape == (1000, 6, 5) and np.all(out1000["ebi"].sum(-1) == 20)
  np.testing.assert_array_equal(out1000["ebi"][:10], out10["ebi"])          # settings repeat with period 35


def test_a_sweep_over_a_few_updates_fewer_reuses_the_compiled_sweep():
  names, settings = ("ebi", "llbg"), [(0.0, 0.0), (0.05, 0.5)]
  run = lambda inputs: engine.sweep_settings(*inputs, settings, names=names, num_samples=20, scope="all",
                                             updates_per_call=64)
  inputs = _random_inputs(k=120)
  whole = run(inputs)
  compiled = engine.sweep_chunk._cache_size()
  fewer = run(jax.tree.map(lambda a: a[:116], inputs))       # 2 calls: 58 evened, 60 rounded as 120's
  assert engine.sweep_chunk._cache_size() == compiled
  for n in names:
    np.testing.assert_array_equal(fewer[n], whole[n][:, :116])


def test_settings_per_call_is_16_on_cpu_and_as_few_calls_as_memory_allows_on_accelerators():
  spc = engine.settings_per_call
  grad_floats = 19 * 129                                          # C = 19, D = 128 (+ bias)
  for n in (1, 10, 1000, 100_000):
    assert spc(n, 440, grad_floats, platform="cpu", bytes_limit=10**12) == engine.SETTINGS_PER_CALL == 16
  h200 = 104 * 2**30                                              # what JAX's allocator reports on a 139 GiB GPU
  assert spc(10, 440, grad_floats, platform="gpu", bytes_limit=h200) == 16                # padded to the floor
  assert spc(17, 440, grad_floats, platform="gpu", bytes_limit=h200) == 32                # next power of two
  assert spc(1000, 440, grad_floats, platform="gpu", bytes_limit=h200) == 1024            # one call
  # a quarter of 104 GiB at 16 bytes per float: 26 GiB / (440 x 2451 x 16 B) = 1,635 settings -> 1,024
  assert spc(5000, 440, grad_floats, platform="gpu", bytes_limit=h200) == 1024
  assert spc(5000, 440, grad_floats, platform="gpu", bytes_limit=h200 * 8) == engine.MAX_SETTINGS_PER_CALL
  assert spc(1000, 440, grad_floats, platform="gpu", bytes_limit=16 * 2**30) == 128        # a 16 GiB card
  assert spc(1000, 440, grad_floats, platform="tpu", bytes_limit=None) == 16               # 1 GiB assumed
  assert spc(1000, 512, 10**7, platform="gpu", bytes_limit=2**30) == 16                    # never below 16


def test_settings_in_larger_calls_give_the_same_counts():
  inputs = _random_inputs(k=5)
  names = ("ebi", "llg_star", "ilrg", "llbg")
  settings = [(0.02 * (i % 6), 0.2 * (i % 4)) for i in range(40)]
  run = lambda p: engine.sweep_settings(*inputs, settings, names=names, num_samples=20, scope="all", per_call=p)
  base = run(16)                                      # what XLA:CPU runs: 3 calls, the last padded
  for p in (64, 7):                                   # one call (padded to 64); 6 calls of 7
    other = run(p)
    for n in names:
      np.testing.assert_array_equal(other[n], base[n], err_msg=f"{n}, {p} settings per call")
  assert run(None)["ebi"].shape == (40, 5, 5)
  said = []                                           # a long sweep says how far it is after every call
  engine.sweep_settings(*inputs, settings, names=names, num_samples=20, scope="all", per_call=16,
                        progress=said.append)
  assert [m.split(";")[0] for m in said] == [f"LDP sweep: {p} of 40 settings x 5 updates done" for p in
                                             ("40%", "80%", "100%")]
  assert said[-1].endswith("ETA 0 s")


def test_updates_in_several_calls_give_the_same_counts_as_one_call():
  inputs = _random_inputs(k=7)
  names = ("ebi", "llg_star", "ilrg", "ilrg_uniform", "llbg")
  settings = [(0.0, 0.0), (0.05, 0.0), (0.02, 0.3), (0.1, 1.0)]
  run = lambda u: engine.sweep_settings(*inputs, settings, names=names, num_samples=20, scope="all",
                                        per_call=3, updates_per_call=u)
  whole = run(512)                                    # one call of 7 updates
  for u in (3, 4, 1):                                 # 3 calls of 3 (the last padded), 2 of 4, 7 of 1
    parts = run(u)
    for n in names:
      assert parts[n].shape == (4, 7, 5)
      np.testing.assert_array_equal(parts[n], whole[n], err_msg=f"{n}, {u} updates per call")
  assert not all(np.array_equal(whole["ebi"][0], whole["ebi"][i]) for i in range(1, 4))   # noise mattered
  with pytest.raises(ValueError, match="updates_per_call"):
    run(0)


def test_swept_ldp_equals_the_static_transform():
  from jaxleak.federated import apply_batch_ldp
  from jaxleak.privacy import LdpConfig
  grads, norms, keys, _, _, _ = _random_inputs()
  norms = jnp.linspace(0.05, 3.0, 6)
  for sigma, tau, scope in ((0.0, 0.5, "all"), (0.1, 0.0, "all"), (0.1, 1.0, "last_layer"), (0.0, 0.0, "all")):
    static = LdpConfig(clip_norm=tau if tau else float("inf"), noise_std=sigma, clip_scope=scope)
    for i in range(6):
      g = jax.tree.map(lambda a: a[i], grads)
      want = apply_batch_ldp(g, norms[i], static, keys[i])
      got = engine.apply_ldp(g, norms[i], jnp.float32(tau or np.inf), jnp.float32(sigma), keys[i], scope=scope)
      jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.fixture(scope="module")
def ldp_study(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("study"))
  st = S.override(S.preset("har_ldp"), {**TINY, "samplings": "sequential", "ldp": "0:0,0.1:0.5,0:1.0",
                                        "attacks": "ebi,ilrg,llg_star,rlu"})
  plan = S.make_plan(st)
  S.run_plan(plan, S.Store(root), progress=None)
  return plan, S.Store(root)


def test_ldp_sigmas_and_taus_give_every_pair_of_the_two_lists():
  # Added 2026-12-06 (thirty-fifth session): a sweep of 1,000 LDP settings needed its 1,000 pairs typed out.
  study = S.override(S.preset("har_ldp"), {**TINY, "ldp_sigmas": "0, 0.1", "ldp_taus": "0,lin:0.5:1.5:3"})
  assert [p.ldp for p in study.parts] == [((0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.0, 1.5),
                                           (0.1, 0.0), (0.1, 0.5), (0.1, 1.0), (0.1, 1.5))]
  typed = S.override(S.preset("har_ldp"), {**TINY, "ldp": "0:0,0:0.5,0:1,0:1.5,0.1:0,0.1:0.5,0.1:1,0.1:1.5"})
  assert [t.key for t in S.make_plan(study, check_inputs=False).tasks] == [
      t.key for t in S.make_plan(typed, check_inputs=False).tasks]             # the records of the same pairs
  big = S.ldp_product("0,geom:1e-3:1:39", "0,lin:0.1:2.4:24")
  assert len(big) == len(set(big)) == 1000 and big[0] == (0.0, 0.0) and big[-1] == (1.0, 2.4)
  sigmas = sorted({s for s, _ in big})
  assert sigmas[1:4] == [0.001, 0.00119935, 0.00143845]             # geometric, 6 significant digits
  assert np.allclose(np.diff(np.log(sigmas[1:])), np.log(1000) / 38, rtol=1e-4)
  taus = sorted({t for _, t in big})
  assert np.allclose(np.diff(taus[1:]), 0.1) and taus[-1] == 2.4
  plan = S.make_plan(S.override(S.preset("har_ldp"), {**TINY, "samplings": "shuffle", "ldp_sigmas": "0,geom:1e-3:1:39",
                                                      "ldp_taus": "0,lin:0.1:2.4:24"}), check_inputs=False)
  assert len(plan.tasks) == 1000 and len(plan.groups) == 1            # one gradient pass, one sweep
  assert sorted((t.config["sigma"], t.config["tau"]) for t in plan.tasks) == sorted(big)
  har_paper = S.override(S.preset("har_paper"), {"ldp_sigmas": "0,0.5", "ldp_taus": "0,1"})
  assert {p.ldp for p in har_paper.parts if not p.multi_step} == {((0.0, 0.0), (0.0, 1.0), (0.5, 0.0), (0.5, 1.0))}


@pytest.mark.parametrize("values,message", [
    ({"ldp_sigmas": "0,0.1"}, "--set ldp_sigmas=0,0.1: give ldp_sigmas and ldp_taus together"),
    ({"ldp_taus": "1"}, "--set ldp_taus=1: give ldp_sigmas and ldp_taus together"),
    ({"ldp_sigmas": "0", "ldp_taus": "1", "ldp": "0:0"}, "--set ldp=0:0 and --set ldp_sigmas=0 --set ldp_taus=1: "
     "choose one"),
    ({"ldp_sigmas": "0,0.1,lin:0:0.1:2", "ldp_taus": "1"}, "ldp_sigmas: [0.0, 0.1] listed more than once"),
    ({"ldp_sigmas": "geom:0:1:3", "ldp_taus": "1"}, "a geom range needs START and STOP > 0 (list 0 as an item"),
    ({"ldp_sigmas": "lin:0:1", "ldp_taus": "1"}, "'lin:0:1' is not lin:START:STOP:NUM (e.g. lin:0.1:1.5:15)"),
    ({"ldp_sigmas": "0", "ldp_taus": "lin:0:1:1"}, "'lin:0:1:1': NUM must be in [2, 10,000]"),
    ({"ldp_sigmas": "0", "ldp_taus": "geom:1:2:100001"}, "NUM must be in [2, 10,000]"),
    ({"ldp_sigmas": "lin:0:1:2.5", "ldp_taus": "1"}, "ldp_sigmas item 'lin:0:1:2.5': '2.5' is not an integer"),
    ({"ldp_sigmas": "0,-0.1", "ldp_taus": "1"}, "ldp_sigmas: -0.1 is not a number in [0, 3.403e+38]"),
    ({"ldp_sigmas": "nan", "ldp_taus": "1"}, "ldp_sigmas: nan is not a number"),
    ({"ldp_sigmas": "0", "ldp_taus": "lin:1:1e39:3"}, "ldp_taus: 5e+38 is not a number in [0, 3.403e+38]"),
    ({"ldp_sigmas": "0", "ldp_taus": ""}, "ldp_taus: empty; give comma-separated numbers or ranges"),
    ({"ldp_sigmas": "0", "ldp_taus": "1,,2"}, "'1,,2' has an empty item"),
    ({"ldp_sigmas": "geom:1e-6:1:1000", "ldp_taus": "lin:0.01:10:1000"}, "1,000 sigmas x 1,000 taus = 1,000,000 LDP "
     "settings, more than 100,000"),
])
def test_ldp_sigmas_and_taus_refuse_what_is_not_a_grid(values, message):
  with pytest.raises(ValueError) as e:
    S.override(S.preset("har_ldp"), {**TINY, **values})
  assert message in str(e.value), str(e.value)


def test_ldp_sigmas_and_taus_are_named_where_nothing_reads_them():
  with pytest.raises(ValueError, match=re.escape("--set ldp_sigmas=0,0.1 --set ldp_taus=1: read only by "
                                                 "single-step tasks")):
    S.override(S.preset("har_multistep"), {"ldp_sigmas": "0,0.1", "ldp_taus": "1"})
  with pytest.raises(ValueError, match=re.escape("unknown study field(s) ['ldp_sigmas', 'ldp_taus'] for "
                                                 "eavesdrop_tables; fields: ")):
    S.override(S.preset("eavesdrop_tables"), {"ldp_sigmas": "0,0.1", "ldp_taus": "1"})


def test_number_lists_take_ranges_and_an_eavesdrop_list_goes_to_the_parts_that_vary_it():
  # Added 2026-12-06 (thirty-fifth session) with ldp_sigmas/ldp_taus: the same ranges in every list of numbers.
  study = S.override(S.preset("har_dirichlet"), {"dirichlet_alphas": "geom:0.1:10:5"})
  assert study.parts[0].dirichlet_alphas == (0.1, 0.316228, 1.0, 3.16228, 10.0)
  study = S.override(S.preset("eavesdrop_compression"), {"compression": "lin:0:0.9:4"})
  assert dict(study.parts[0].axes)["compression"] == (0.0, 0.3, 0.6, 0.9)
  with pytest.raises(ValueError, match=re.escape("dirichlet_alphas: [0.3, 0.3]; give distinct numbers")):
    S.make_plan(S.override(S.preset("har_dirichlet"), {"dirichlet_alphas": "0.3,0.3"}), check_inputs=False)
  # Integer axes (2026-12-07; they took numbers only): a range's values rounded to the nearest integer, exactly.
  study = S.override(S.preset("eavesdrop_sweeps"), {"num_participants": "lin:100:1000:10"})
  assert [dict(p.axes)["num_participants"] for p in study.parts if "num_participants" in dict(p.axes)] == [
      tuple(range(100, 1001, 100))]
  study = S.override(S.preset("eavesdrop_sweeps"), {"local_batch_size": "8,geom:16:256:5"})
  assert [dict(p.axes)["local_batch_size"] for p in study.parts if "local_batch_size" in dict(p.axes)] == [
      (8, 16, 32, 64, 128, 256)]
  assert all(type(v) is int for v in dict(study.parts[0].axes).get("local_batch_size", ()))
  assert S.override(S.preset("har_ldp"), {"aggregate_clients": "lin:1:4:4"}).parts[0].aggregate_clients == (1, 2, 3, 4)
  with pytest.raises(ValueError, match=re.escape("num_participants: 'geom:1:10:20' makes [1, 2, 3, 4, 5] more than "
                                                 "once when rounded to integers")):
    S.override(S.preset("eavesdrop_sweeps"), {"num_participants": "geom:1:10:20"})
  with pytest.raises(ValueError, match=re.escape("num_participants item 'lin:100:1000:x': 'x' is not an integer")):
    S.override(S.preset("eavesdrop_sweeps"), {"num_participants": "lin:100:1000:x"})
  # Found the same day: a list for a field one part of a study varies was refused because the other parts hold one
  # value of it ("'0.5,0.9' is not a number (one value: this study does not vary it)").
  paper = S.preset("eavesdrop_paper")
  study = S.override(paper, {"compression": "0.5,0.9"})
  for before, after in zip(paper.parts, study.parts):
    if "compression" in dict(before.axes):
      assert dict(after.axes)["compression"] == (0.5, 0.9)
    else:
      assert after == before                                       # the parts that hold one value keep it
  assert any("compression" in dict(p.axes) for p in paper.parts)
  defences = S.override(S.preset("eavesdrop_defences"), {"ldp_noise": "geom:1e-4:1e-1:4"})
  assert [dict(p.axes).get("ldp_noise") for p in defences.parts if "ldp_noise" in dict(p.axes)] == [
      (0.0001, 0.001, 0.01, 0.1)]
  assert all(dict(p.base).get("ldp_noise", 0.0) in (0.0, None) for p in defences.parts if "ldp_noise" not in
             dict(p.axes))
  with pytest.raises(ValueError, match=re.escape("compression: '0.5,0.9' is not a number (one value: this study "
                                                 "does not vary it)")):
    S.override(S.preset("eavesdrop_tables"), {"compression": "0.5,0.9"})
  with pytest.raises(ValueError, match=re.escape("num_participants: 'lin:10:30:3' is not an integer (one value: this "
                                                 "study does not vary it)")):     # a range, as a list (2026-12-07)
    S.override(S.preset("eavesdrop_tables"), {"num_participants": "lin:10:30:3"})
  one = S.override(paper, {"compression": "0.5"})                   # one value: every part
  assert all(dict(p.axes).get("compression", (0.5,)) == (0.5,) and dict(p.base).get("compression", 0.5) == 0.5
             for p in one.parts if not isinstance(p, S.WholeDeterminationGrid))


def test_records_equal_separate_runs(ldp_study):
  plan, store = ldp_study
  for task in plan.tasks[1:]:                      # the LDP settings (the first, no LDP, is covered by the others)
    rec = store.read(task.key)
    c = task.config
    alone = L.run_leakage(engine.leakage_config(c, c["sigma"], c["tau"]))
    for attack in c["attacks"]:
      got = rec["results"]["attacks"][attack]
      assert got["clients"]["lnacc"] == [float(v) for v in alone.client_metrics[attack].lnacc], (c, attack)
      for m in ("lnacc", "leacc", "class_acc", "symmetric_existence"):  # summaries as the eager function's, bitwise
        per_client = np.asarray(getattr(alone.client_metrics[attack], m))
        assert got["summary"][m] == [float(x) for x in M.mean_std_over_clients(per_client)], (c, attack, m)
        assert got["summary"][m] == pytest.approx([np.nanmean(per_client), np.nanstd(per_client)], rel=1e-6)


def test_defences_side_by_side_records_equal_separate_runs_and_fill_one_table(tmp_path):
  from jaxleak.runs.report import load, tables as RT
  tiny = dict(datasets=("synthetic_tiny",), models=("tinyhar",), states=("untrained",), samplings=("sequential",),
              num_clients=2)
  st = S.Study("defences", (S.HarGrid(**tiny, attacks=("ebi", "llg")),
                            S.HarGrid(**tiny, attacks=("llg",), head_bias=False),
                            S.HarGrid(**tiny, attacks=("ebi", "llg"), compression=0.9)))
  plan = S.make_plan(st)
  S.run_plan(plan, S.Store(str(tmp_path)), progress=None)
  compressed = next(t for t in plan.tasks if t.config.get("compression"))
  alone = L.run_leakage(engine.leakage_config(compressed.config))
  assert alone.config.compression == 0.9
  rec = S.Store(str(tmp_path)).read(compressed.key)
  for attack in ("ebi", "llg"):
    assert rec["results"]["attacks"][attack]["clients"]["lnacc"] == [
        float(v) for v in alone.client_metrics[attack].lnacc], attack
  results = load(str(tmp_path))
  table = RT.har_defences_table(results, RT.Accountant())
  assert table.columns == ["setting", "attack", "none", "bias-free head", "top-k CR=0.9"]
  ebi = next(r for r in table.rows if r[1] == "EBI")
  assert ebi[3] == "no bias" and isinstance(ebi[2], float) and isinstance(ebi[4], float)
  with pytest.raises(ValueError, match="bias-free head"):
    S.HarGrid(**tiny, attacks=("ebi",), head_bias=False).validate()


def test_class_weighted_clients_are_a_setting_of_their_own_in_studies_collect_and_reports(tmp_path):
  from jaxleak.runs.report import load, tables as RT
  plain = S.make_plan(S.override(S.preset("har_sampling"), TINY), check_inputs=False)
  assert all("client_loss" not in t.config for t in plain.tasks)          # keys of existing studies do not move
  tiny = dict(datasets=("synthetic_tiny",), models=("tinyhar",), states=("untrained",), samplings=("sequential",),
              num_clients=2, attacks=("ebi", "llg"))
  st = S.Study("loss", (S.HarGrid(**tiny), S.HarGrid(**tiny, client_loss="class_weighted"),
                        S.HarGrid(**tiny, ldp=((0.1, 1.0),), client_loss="class_weighted")))
  plan = S.make_plan(st)
  assert len(plan.tasks) == 3 and len(plan.groups) == 2
  assert sorted(g.label.endswith("loss=class_weighted") or "loss=class_weighted (" in g.label
                for g in plan.groups) == [False, True]
  S.run_plan(plan, S.Store(str(tmp_path)), progress=None)
  for task in plan.tasks:                             # each record equals its setting run alone
    cfg = engine.leakage_config(task.config, task.config["sigma"], task.config["tau"])
    assert cfg.client_loss == task.config.get("client_loss", "mean")
    alone = L.run_leakage(cfg)
    rec = S.Store(str(tmp_path)).read(task.key)
    assert rec["results"]["attacks"]["ebi"]["clients"]["lnacc"] == [
        float(v) for v in alone.client_metrics["ebi"].lnacc], task.config
  text, _ = collect.collect(plan, S.Store(str(tmp_path)))
  rows = list(csv.DictReader(open(os.path.join(str(tmp_path), "tables", "summary.csv"))))
  assert sorted({r["client_loss"] for r in rows}) == ["class_weighted", "mean"]
  results = load(str(tmp_path))
  assert [r.settings["client_loss"] for r in RT.single_step_plain(results)] == ["mean"]    # the papers' tables
  summary = RT.har_summary_table(results, RT.Accountant())
  losses = {row[summary.columns.index("client loss")] for row in summary.rows}
  assert losses == {"mean", "class_weighted"}
  table = RT.har_defences_table(results, RT.Accountant())      # weighted clients: rows of their own, not "none"
  assert table.columns == ["setting", "attack", "none", "LDP sigma=0.1 tau=1"]
  weighted = [r for r in table.rows if "class-weighted loss" in r[0]]
  assert len(weighted) == 2 and all(r[2] is not None and r[3] is not None for r in weighted)
  with pytest.raises(ValueError, match="client_loss: unknown 'median'; valid: mean, class_weighted"):
    S.HarGrid(**tiny, client_loss="median").validate()
  both = S.make_plan(S.override(S.preset("har_client_loss"), TINY), check_inputs=False)
  assert len(both.tasks) == 2 * len(plain.tasks) and {t.key for t in plain.tasks} < {t.key for t in both.tasks}
  paper = S.make_plan(S.override(S.preset("har_paper"), {**TINY, "client_loss": "class_weighted"}),
                      check_inputs=False)                        # every part takes it, multi-step included
  multi = next(t for t in paper.tasks if t.config["multi_step"] is not None)
  assert {t.config.get("client_loss") for t in paper.tasks} == {"class_weighted"}
  assert engine.leakage_config(multi.config).client_loss == "class_weighted"


def test_eavesdrop_participants_class_weighted_loss_is_a_setting_of_its_own_in_studies_collect_and_reports(tmp_path):
  from jaxleak.runs import eavesdrop as EV
  from jaxleak.runs.report import load, tables as RT
  old = S.make_plan(S.override(S.preset("eavesdrop_tables"), {"dataset": "digits"}), check_inputs=False)
  assert all("client_loss" not in t.config for t in old.tasks)              # keys of existing studies do not move
  small = {"dataset": "digits", "num_participants": "12", "fraction": "0.25", "rounds": "2"}
  plan = S.make_plan(S.override(S.preset("eavesdrop_client_loss"), small))
  assert len(plan.tasks) == 4 and len(plan.groups) == 4
  assert sorted(t.config.get("client_loss", "mean") for t in plan.tasks) == ["class_weighted"] * 2 + ["mean"] * 2
  assert sum(g.label.endswith("client_loss=class_weighted") for g in plan.groups) == 2
  store = S.Store(str(tmp_path))
  S.run_plan(plan, store, progress=None)
  weighted = [t for t in plan.tasks if t.config.get("client_loss") == "class_weighted"
              and t.config["partition"] == "dirichlet"]
  for task in weighted:                                    # its record equals its federation run alone
    cfg = engine.eavesdrop_config({k: v for k, v in task.config.items() if k != "replicates"})
    assert cfg.local.loss == "class_weighted"
    s = EV.summarize_rounds(EV.run_rounds(EV.setup(cfg)), cfg)
    assert store.read(task.key)["results"]["overall"] == {k: float(v) for k, v in s["overall"].items()}
  collect.collect(plan, store)
  rows = list(csv.DictReader(open(os.path.join(str(tmp_path), "tables", "eavesdrop.csv"))))
  assert sorted({r["client_loss"] for r in rows}) == ["class_weighted", "mean"]
  results = load(str(tmp_path))
  summary = RT.eavesdrop_summary(results)
  assert sorted((row[summary.columns.index("participants")], row[summary.columns.index("client loss")])
                for row in summary.rows) == [(p, loss) for p in ("Dirichlet(0.5)", "main labels")
                                             for loss in ("class_weighted", "mean")]
  per_label = RT.eavesdrop_per_label(results)                # the paper's Tables III-IV: the mean loss only
  ours = [r[1] for r in per_label.rows if str(r[1]).startswith("ours")]
  assert len(ours) == 2 * 3 and len(set(ours)) == 2          # 2 federations x 3 metrics; Dirichlet's named as such
  with pytest.raises(ValueError, match="client_loss: unknown 'median'; valid: mean, class_weighted"):
    S.make_plan(S.override(S.preset("eavesdrop_tables"), {**small, "client_loss": "median"}))


def test_an_attacker_taking_part_in_replicated_federations_is_recorded_and_collected(tmp_path):
  """attacker_participates with replicates (refused until the thirtieth session): the record holds the attacker's
  summary (with and without its own upload removed) of the replicates' pooled rounds, equal to the library's, and
  collect writes it to eavesdrop.csv."""
  from jaxleak.runs import eavesdrop as EV
  small = {"dataset": "digits", "model": "mlp", "num_participants": "12", "fraction": "0.5", "rounds": "4",
           "attacker_participates": "true", "replicates": "2"}
  plan = S.make_plan(S.override(S.preset("eavesdrop_tables"), small))
  (task,) = plan.tasks
  store = S.Store(str(tmp_path))
  S.run_plan(plan, store, progress=None)
  cfg = engine.eavesdrop_config({k: v for k, v in task.config.items() if k != "replicates"})
  want = EV.summarize_rounds(EV.pool_results(EV.run_rounds_replicated(EV.setup_replicates(cfg, 2))), cfg)["attacker"]
  got = store.read(task.key)["results"]["attacker"]
  assert got == pytest.approx(want) and got["rounds"] == 8 and 0 < got["rounds_selected"] < 8
  collect.collect(plan, store)
  (row,) = csv.DictReader(open(os.path.join(str(tmp_path), "tables", "eavesdrop.csv")))
  assert int(row["attacker_rounds_selected"]) == got["rounds_selected"]
  assert float(row["attacker_sniff_not_removed"]) == pytest.approx(got["sniff_not_removed"], abs=1e-6)
  from jaxleak.runs.report import load, tables as RT
  summary = RT.eavesdrop_summary(load(str(tmp_path)))                 # the report: beside the main columns
  (cells,) = [dict(zip(summary.columns, r)) for r in summary.rows]
  assert cells["attacker's rounds"] == got["rounds_selected"] and "and, for comparison, without" in summary.note
  assert cells["its QI a=1, not removed"] == got["qi_alpha1_not_removed"]


def test_compressed_uploads_keep_the_largest_entries_of_each_leaf():
  from jaxleak.runs.leakage.scoring import compress_uploads
  values = jnp.arange(1.0, 21.0) * jnp.tile(jnp.array([1.0, -1.0]), 10)           # 1, -2, 3, ..., -20
  g = LastLayerGrads(kernel=values.reshape(1, 4, 5), bias=jnp.array([[0.1, -3.0, 2.0, 0.5, -0.2]]))
  out = compress_uploads(g, 0.8)
  assert np.count_nonzero(out.kernel) == 4 and np.count_nonzero(out.bias) == 1
  np.testing.assert_array_equal(np.flatnonzero(out.bias[0]), [1])
  assert set(np.asarray(out.kernel).ravel()[np.flatnonzero(out.kernel)]) == {17.0, -18.0, 19.0, -20.0}


def test_collect_table_holds_the_records_numbers_and_status_counts(ldp_study, capsys):
  plan, store = ldp_study
  out, missing = collect.collect(plan, store)
  assert missing == 0
  rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
  assert len(rows) == 3 * 4 * 2                                   # tasks x attacks x clients
  for row in rows:
    rec = store.read(row["task"])["results"]
    i = rec["subjects"].index(int(row["subject"]))
    assert float(row["lnacc"]) == pytest.approx(rec["attacks"][row["attack"]]["clients"]["lnacc"][i], rel=1e-5)
  assert "3/3 tasks done" in S.status(plan, store)
  from jaxleak import accounting
  eps = {(r["sigma"], r["tau"]): r["epsilon_exact_delta_1e-5"] for r in csv.DictReader(open(os.path.join(out,
                                                                                                     "summary.csv")))}
  assert eps == {("0", "0"): "", ("0.1", "0.5"): f"{accounting.gaussian_epsilon(0.1, 0.5, method='exact').value:.6g}",
                 ("0", "1"): "inf"}


def _tree(root):
  """{relative path: bytes} of every file under root."""
  return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
          for d, _, files in os.walk(root) for f in files}


def _adopted_copy(study, tmp_path):
  """A copy of a study the library ran, with the study.json a command would have written (plan, Store)."""
  import shutil
  plan, store = study
  root = str(tmp_path / "study")
  shutil.copytree(store.root, root)
  S.adopt_folder(plan, S.Store(root), write=True, progress=None)
  return plan, S.Store(root)


def test_collect_writes_the_tables_elsewhere_and_leaves_the_study_folder_as_it_is(ldp_study, tmp_path, capsys):
  # Found 2026-12-06 (thirty-fifth session): a study one may read but not write (a colleague's, a read-only
  # mount) could not be collected: `collect` wrote only <study_dir>/tables, and its error said "write elsewhere".
  plan, store = _adopted_copy(ldp_study, tmp_path)
  default, _ = collect.collect(plan, store)
  expected = _tree(default)
  before = _tree(store.root)
  out = tmp_path / "mine" / "tables"
  assert cli.call(study_cli.main, study_cli.FLAGS, ["collect", f"--study_dir={store.root}",
                                                    f"--tables_dir={out}"]) == 0
  assert f"tables in {out}/" in capsys.readouterr().out
  assert _tree(str(out)) == expected                               # the same tables, the same checksums
  assert _tree(store.root) == before                               # nothing written in the study folder
  for wrong, message in [(store.root, "is the study folder"), (os.path.join(store.root, "records", "t"),
                                                               "lies inside the study folder"),
                         (os.path.dirname(store.root), "holds the study folder")]:
    assert cli.call(study_cli.main, study_cli.FLAGS, ["collect", f"--study_dir={store.root}",
                                                      f"--tables_dir={wrong}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "name one outside it" in err, err
  assert _tree(store.root) == before


def test_collect_into_a_study_it_cannot_write_names_tables_dir(ldp_study, tmp_path, monkeypatch, capsys):
  import errno
  plan, store = _adopted_copy(ldp_study, tmp_path)
  real = storage.commit_folder

  def read_only(path, files):
    if os.path.realpath(path).startswith(os.path.realpath(store.root)):
      with storage._writing(path):
        raise OSError(errno.EROFS, "Read-only file system", path)
    real(path, files)
  monkeypatch.setattr(storage, "commit_folder", read_only)
  assert cli.call(study_cli.main, study_cli.FLAGS, ["collect", f"--study_dir={store.root}"]) == 2
  err = capsys.readouterr().err
  assert "the file system is read-only" in err and "`collect --tables_dir=<folder>` writes the tables" in err, err


def test_a_damaged_record_is_recomputed_not_trusted(ldp_study):
  plan, store = ldp_study
  key = plan.tasks[0].key
  path = os.path.join(store.root, "records", key + ".json")
  original = open(path, "rb").read()
  open(path, "wb").write(original.replace(b'"lnacc"', b'"lnacX"', 1))
  assert not store.has(key)
  S.run_plan(plan, store, progress=None)
  assert open(path, "rb").read() == original                       # recomputed bitwise


def test_a_disk_that_fills_while_records_are_written_ends_the_run_in_one_line_and_a_rerun_completes_it(
    ldp_study, tmp_path, capsys, monkeypatch):
  # The records of an LDP sweep are written in a background thread (`Store.writing_behind`): its failure must
  # still end the run, in the main thread's one line, with the records before it whole.
  import errno
  plan, store = ldp_study
  real_replace, replaced = os.replace, []

  def fills_at_the_second_record(src, dst):
    if os.path.basename(os.path.dirname(dst)) == "records":
      replaced.append(dst)
      if len(replaced) == 2:
        raise OSError(errno.ENOSPC, "No space left on device")
    real_replace(src, dst)
  monkeypatch.setattr(storage.os, "replace", fills_at_the_second_record)
  root = tmp_path / "study"
  args = ["run", "har_ldp", f"--study_dir={root}", *(f"--set={k}={v}" for k, v in TINY.items()),
          "--set=samplings=sequential", "--set=ldp=0:0,0.1:0.5,0:1.0", "--set=attacks=ebi,ilrg,llg_star,rlu"]
  assert cli.call(study_cli.main, study_cli.FLAGS, args) == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
      f"error: writing {root}/records/") and "no space is left on the device" in err
  written = sorted(os.listdir(root / "records"))
  assert written and len(written) < len(plan.tasks) and not any(n.startswith(".") for n in written)
  for name in written:                                              # whole, and as the unbroken run's
    assert (root / "records" / name).read_bytes() == open(os.path.join(store.root, "records", name), "rb").read()
  monkeypatch.setattr(storage.os, "replace", real_replace)
  assert cli.call(study_cli.main, study_cli.FLAGS, args) == 0
  for task in plan.tasks:
    assert (root / "records" / f"{task.key}.json").read_bytes() == open(
        os.path.join(store.root, "records", task.key + ".json"), "rb").read()


def test_the_checks_before_work_draw_each_allocation_once_and_still_refuse_a_bad_one(monkeypatch):
  # Found 2026-12-07: eavesdrop_sweeps' 24 groups drew 15 allocations of the same federation, so a dry run with
  # num_participants=10,000 took 32 s (100,000: 4.7 min); the groups differ only in local training there.
  from jaxleak.runs.eavesdrop import federation
  from jaxleak.runs.study.plan import check_eavesdrop_data
  drawn = []
  real = federation.D.allocate_main_labels
  monkeypatch.setattr(federation.D, "allocate_main_labels",
                      lambda pool, n, **kw: drawn.append((n, kw["seed"])) or real(pool, n, **kw))
  plan = S.make_plan(S.override(S.preset("eavesdrop_sweeps"), {"dataset": "digits"}), check_inputs=False)
  federations = {(t.config["num_participants"], t.config["seed"]) for t in plan.tasks}
  check_eavesdrop_data(plan)
  assert sorted(drawn) == sorted(federations) and len(plan.groups) > len(drawn) > 1
  bad = S.make_plan(S.override(S.preset("eavesdrop_sweeps"), {"dataset": "digits", "main_labels": "1,20"}),
                    check_inputs=False)
  with pytest.raises(ValueError, match="hi < num_classes = 10"):
    check_eavesdrop_data(bad)


def test_a_finished_study_run_again_says_its_tasks_are_stored_and_its_groups_done(ldp_study):
  plan, store = ldp_study
  lines = []
  S.run_plan(plan, store, progress=lines.append)
  assert lines[0] == (f"study {plan.study.name}: 1 group, 3 tasks (3 stored); groups: 1 done, 0 to run -> "
                      f"{store.root}"), lines      # (it said "1 already done" of 3 tasks: read as one task)


def test_a_record_is_a_field_a_line_and_verifies_in_any_json_layout(ldp_study):
  plan, store = ldp_study
  path = os.path.join(store.root, "records", plan.tasks[1].key + ".json")
  text = open(path, encoding="utf-8").read()
  body = json.loads(text)
  assert store_lib.record_text(body) == text
  lines = text.splitlines()
  for field, value in body["config"].items():                       # the config field by field
    assert f'  "{field}": {json.dumps(value, sort_keys=True)},' in lines or \
        f'  "{field}": {json.dumps(value, sort_keys=True)}' in lines, field
  attack = plan.tasks[1].config["attacks"][0]
  summary = json.dumps(body["results"]["attacks"][attack]["summary"], sort_keys=True)
  assert f'    "summary": {summary}' in lines                      # an attack's results a line per field
  nested = {"a": {1: [2], 3: {}}, "b": []}                           # not string keys: on one line, as JSON has them
  assert store_lib.record_text(nested, depth=3) == '{\n "a": {"1": [2], "3": {}},\n "b": []\n}\n'
  try:                                                               # the checksum covers content, not layout
    open(path, "w", encoding="utf-8").write(json.dumps(body, indent=3))
    assert store.read(plan.tasks[1].key) == body
  finally:
    open(path, "w", encoding="utf-8").write(text)


@pytest.mark.parametrize("args,message", [
    (["run", "nope"], "unknown study 'nope'"),
    (["run", "har_ldp", "--set=modelz=x"], "unknown study field(s) ['modelz']"),
    (["run", "har_ldp", "--set=ldp=0:-1"], "is not a pair of numbers in [0, 3.403e+38]"),
    (["run", "har_ldp", "--set=ldp=0:0,1e300:1"], "(1e+300, 1.0) is not a pair of numbers in [0, 3.403e+38]"),
    (["run", "har_multistep", "--set=local_lr=1e39"], "local_lr must be a number in (0, 3.403e+38] (float32)"),
    (["run", "eavesdrop_tables", "--set=local_lr=1e39"], "the learning rate a number in (0, 3.403e+38] (float32)"),
    (["run", "har_multistep", "--set=multi_step=100:200:5"], "B <= N"),
    (["run", "har_ldp", "--set=datasets=mnist"], "datasets: unknown ['mnist']"),
    (["run", "har_sampling", "--set=states=trained", "--set=datasets=synthetic_tiny",
      "--set=checkpoint_dir=/nonexistent/{dataset}_{model}"], "trained-model checkpoint(s) missing"),
    (["run", "har_sampling", "--set=states=trained", "--set=datasets=synthetic_tiny", "--set=synthetic_scale=0.5",
      "--set=checkpoint_dir=/nonexistent/{dataset}_{model}"],
     "--model=deepconvlstm --synthetic_scale=0.5 --checkpoint_dir=/nonexistent/synthetic_tiny_deepconvlstm"),
    # Found 2026-12-07 (thirty-ninth session): folder names with a space were printed unquoted in the command.
    (["run", "har_sampling", "--set=states=trained", "--set=datasets=synthetic_tiny",
      "--set=checkpoint_dir=/nonexistent/my runs/{dataset}_{model}"],
     "--checkpoint_dir='/nonexistent/my runs/synthetic_tiny_deepconvlstm' (or --set states=untrained)"),
    (["run", "har_sampling", "--set=states=trained", "--set=checkpoint_dir=/nonexistent/{dataset}"],
     "has no {model}, so the 2 models of states=trained would read one checkpoint"),
    (["run", "har_ldp", "--task_index=3", "--num_tasks=2"], "--task_index=3"),
    (["run", "har_dirichlet", "--set=dirichlet_alphas=0.1,-1"], "dirichlet_alphas"),
    (["run", "har_dirichlet", "--set=states=trained"], "states=untrained"),
    (["run", "eavesdrop_tables", "--set=model=nope"], "unknown model 'nope'"),
    (["run", "har_multistep", "--set=multi_step=100:20:5,100:20:5"], "an (N, B, S) triple is listed twice"),
    # Found 2026-12-05 (seventeenth session): B x S < N ran, scoring the attacks against windows never trained on.
    (["run", "har_multistep", "--set=multi_step=100:20:4"], "the other 20 of the update's N would never be trained"),
    (["run", "har_sampling", "--set=head_bias=nope"], "--set head_bias=nope: head_bias: 'nope' is not true or false"),
    (["run", "eavesdrop_tables", "--set=replicates=0"], "--set replicates=0: must be a positive integer"),
    (["run", "har_sampling", "--set=seeds=-1"], "seeds: [-1]; give distinct integers >= 0"),   # was NumPy's words
    (["run", "eavesdrop_tables", "--set=seed=-1"], "seed must be an integer >= 0, got -1"),
    # Before: seed 2**32 ran, with the keys (and results) of seed 0 under another name.
    (["run", "har_sampling", "--set=seeds=4294967296"], "seeds must be at most 4,294,967,295"),
    (["run", "eavesdrop_whole_determination", "--set=dataset=digits", "--set=seed=4294967290"],
     "seed must be at most 4,294,967,276 so that its 20 consecutive seeds"),
    (["run", "eavesdrop_tables", "--set=num_participants=1.5"],
     "--set num_participants=1.5: num_participants: '1.5' is not an integer."),
    (["run", "har_sampling", "--set=datasets=synthetic_tiny", "--set=data_dir=/x"],
     "data_dir is read only by wear, wetlab, tal; none of datasets ['synthetic_tiny'] reads it"),
    (["run", "har_sampling", "--set=datasets=hapt", "--set=synthetic_scale=0.5"],
     "synthetic_scale is read only by synthetic_wear"),
    (["run", "eavesdrop_tables", "--set=abort_std=0"], "abort_std must be a finite number > 0"),
    (["run", "eavesdrop_tables", "--set=dirichlet_alpha=0.3"], "dirichlet_alpha=0.3: not read with partition="),
    (["run", "eavesdrop_dirichlet", "--set=partition=main_labels"], "dirichlet_alpha=0.1: not read with partition="),
    (["run", "eavesdrop_tables", "--set=dataset=digits", "--set=main_labels=1,20"], "hi < num_classes = 10"),
    (["run", "eavesdrop_tables", "--set=dataset=wear"], "needs --data_dir"),
    (["run", "eavesdrop_whole_determination", "--set=dataset=digits", "--set=samples_per_label=0"],
     "samples_per_label must be positive"),
    (["run", "har_sampling", "--ray_address=10.0.0.1:6379"], "--ray_address is only used with --executor=ray"),
    (["run", "har_sampling", "--ray_gpus_per_task=1"], "--ray_gpus_per_task is only used with --executor=ray"),
    (["run", "har_sampling", "--set=datasets=synthetic_tiny", "--set=states=untrained", "--executor=ray",
      "--ray_gpus_per_task=-1"], "--ray_gpus_per_task=-1.0: must be a number >= 0"),
    (["run", "har_sampling", "--set=datasets=synthetic_tiny", "--set=states=untrained", "--executor=ray",
      "--ray_gpus_per_task=1.5"], "--ray_gpus_per_task=1.5: above 1 Ray takes whole GPUs only"),
    # Found 2026-12-04 (sixteenth session): accepted; every JAX process of the run submitted every group to Ray.
    (["run", "har_sampling", "--distributed", "--executor=ray"], "--distributed and --executor=ray: choose one"),
    # Found 2026-12-04 (thirteenth session): ray.init waited ~a minute on a wrong address, then failed in Ray's
    # words, after study.json had been written.
    (["run", "har_sampling", "--set=datasets=synthetic_tiny", "--set=states=untrained", "--executor=ray",
      "--ray_address=127.0.0.1:1"], "--ray_address 127.0.0.1:1: nothing answers at 127.0.0.1:1"),
    (["run", "har_sampling", "--set=datasets=synthetic_tiny", "--set=states=untrained", "--executor=ray",
      "--ray_address=headnode"], "expected host:port"),
    # Found 2026-12-06 (thirty-fourth session): credentials in the address were printed back.
    (["run", "har_sampling", "--set=datasets=synthetic_tiny", "--set=states=untrained", "--executor=ray",
      "--ray_address=ray://me:s3cret@127.0.0.1:1"], "--ray_address ray://***@127.0.0.1:1: nothing answers at 127.0"),
    # Found 2026-12-04 (fourteenth session): values no task reads ran as if applied (the first four), and
    # `--set ldp=...` on har_paper reached its multi-step part too, refused as "multi_step and ldp in one grid".
    (["run", "har_sampling", "--set=local_lr=0.01"], "--set local_lr=0.01: read only by multi-step tasks"),
    (["run", "har_sampling", "--set=equivalent=sum"], "--set equivalent=sum: read only by multi-step tasks"),
    (["run", "har_multistep", "--set=num_samples=50"], "--set num_samples=50: read only by single-step tasks"),
    (["run", "har_ldp", "--set=ldp=0:0,0.1:0", "--set=clip_scope=last_layer"],
     "--set clip_scope=last_layer: read only by single-step tasks with an ldp pair that clips (tau > 0)"),
    (["run", "har_sampling", "--set=states=untrained", "--set=checkpoint_dir=x"],
     "--set checkpoint_dir=x: read only by tasks of states=trained"),
    (["run", "har_multistep", "--set=equivalent=bogus"], "equivalent: unknown 'bogus'; valid: mean, sum"),
    # Found 2026-12-04 (fourteenth session): Whole Determination ignored these. (attacker_participates with
    # replicates failed when its group started, after study.json was written: runs since the thirtieth session.)
    (["run", "eavesdrop_whole_determination", "--set=sniff_margin=0.3"],
     "--set sniff_margin=0.3: not read by Whole Determination"),
    (["run", "eavesdrop_whole_determination", "--set=replicates=3"], "wd_trials are its replicates"),
    (["run", "eavesdrop_whole_determination", "--set=partition=dirichlet"], "--set partition=dirichlet: not read"),
    # Found 2026-12-04 (fourteenth session): status and collect took run's flags and ignored them (a shard's
    # --task_index, a --set that did not change what they read), list its arguments.
    (["status", "--task_index=1", "--num_tasks=2"], "--task_index, --num_tasks: read only by `run`; status reads"),
    (["collect", "--set=models=tinyhar"], "--set: read only by `run`; collect reads the study stored"),
    (["collect", "--dry_run"], "--dry_run: read only by `run`"),
    (["status", "--tables_dir=x"], "--tables_dir: read only by `collect` (where it writes the tables); status"),
    (["collect", "--tables_dir="], "--tables_dir is empty: name the folder the tables go to"),
    (["run", "har_sampling", "--tables_dir=x"], "--tables_dir: read only by `collect`"),
    (["list"], "--study_dir: list takes none (it lists the presets)"),
    # Found 2026-12-04 (fourteenth session): optional fields were typed by guessing from the text (Python's words
    # for 'abc' or 2.5), and an Eavesdrop axis value could be listed twice.
    (["run", "har_sampling", "--set=num_clients=abc"], "--set num_clients=abc: num_clients: 'abc' is not an integer."),
    (["run", "har_sampling", "--set=num_clients=2.5"], "--set num_clients=2.5: num_clients: '2.5' is not an integer."),
    (["run", "har_sampling", "--set=dropout=abc"], "--set dropout=abc: dropout: 'abc' is not a number."),
    # Found 2026-12-05 (seventeenth session): "invalid literal for int() with base 10: '1,2'" for a list given to a
    # field this study does not vary.
    # Found 2026-12-05 (twenty-fifth session): a list for a name field the study does not vary was read as one
    # unknown name ("client_loss: unknown 'class_weighted,mean'").
    (["run", "eavesdrop_tables", "--set=client_loss=class_weighted,mean"],
     "client_loss: 'class_weighted,mean' is not one value (client_loss takes one value here"),
    (["run", "har_sampling", "--set=client_loss=class_weighted,mean"], "client_loss: 'class_weighted,mean' is not one"),
    (["run", "eavesdrop_tables", "--set=num_participants=100,200"], "'100,200' is not an integer (one value: this"),
    (["run", "eavesdrop_tables", "--set=model=mlp,cnn,mlp"], "model: a value is listed more than once"),
    (["status"], "holds no study"),
    (["frobnicate"], "give a command"),
    # Found 2026-12-05 (eighteenth session): a --dry_run took distributed flags a run refuses.
    (["run", "har_sampling", "--dry_run", "--process_id=1"], "--process_id is only used with --distributed"),
    (["run", "har_sampling", "--dry_run", "--distributed", "--num_processes=2", "--process_id=2"],
     "--process_id=2: must be in [0, --num_processes=2)"),
    (["run", "har_sampling", "--dry_run", "--distributed", "--coordinator_address=x"], "must be host:port"),
    # ... and replicates whose seeds pass 2**32 (replicate r plays seed + r).
    (["run", "eavesdrop_tables", "--set=dataset=digits", "--set=replicates=3", "--set=seed=4294967294"],
     "seed must be at most 4,294,967,293 so that its 3 consecutive seeds"),
    # Found 2026-12-05 (nineteenth session, a --set fuzzer): an empty item was dropped, so `multi_step=,` turned
    # har_multistep into single-step tasks; a stray ':' gave Python's "invalid literal for int() with base 10: ''".
    (["run", "har_multistep", "--dry_run", "--set=multi_step=,"], "--set multi_step=,: ',' has an empty item"),
    (["run", "har_ldp", "--dry_run", "--set=seeds=1,,2"], "'1,,2' has an empty item"),
    (["run", "har_sampling", "--dry_run", "--set=datasets=synthetic_wear,"], "'synthetic_wear,' has an empty item"),
    (["run", "har_multistep", "--dry_run", "--set=multi_step=100:20:5:"], "'100:20:5:' is not N:B:S integers"),
    (["run", "har_multistep", "--dry_run", "--set=multi_step=100:x:5"], "multi_step item '100:x:5': 'x' is not an"),
    (["run", "har_ldp", "--dry_run", "--set=ldp=0:0,0.1:y"], "ldp item '0.1:y': 'y' is not a number."),
    (["run", "har_dirichlet", "--dry_run", "--set=dirichlet_alphas=0.1,x"], "dirichlet_alphas: 'x' is not a number."),
    (["run", "har_sampling", "--chunk_size=0"], "--chunk_size=0: must be a positive integer."),
    (["run", "eavesdrop_tables", "--chunk_size=4", "--set=dataset=digits"],   # digits: no extra needed
     "--chunk_size: read only by HAR groups, and eavesdrop_tables"),
    (["status", "--chunk_size=4"], "--chunk_size: read only by `run`"),
])
def test_bad_study_commands_are_refused_before_any_work(args, message, tmp_path, capsys):
  rc = cli.call(study_cli.main, study_cli.FLAGS, [*args, f"--study_dir={tmp_path / 's'}"])
  err = capsys.readouterr().err
  assert rc == 2 and message in err and "s3cret" not in err, err
  assert not (tmp_path / "s").exists()                       # not even study.json


def test_a_misspelt_study_is_named_before_a_missing_study_dir(capsys):
  """Found 2026-12-06 (thirty-second session): `run nope` said only that --study_dir was required; given it, the
  next try said the study was unknown."""
  assert cli.call(study_cli.main, study_cli.FLAGS, ["run", "nope"]) == 2
  assert "unknown study 'nope'; presets: " in capsys.readouterr().err


def test_dirichlet_clients_are_checked_for_each_n_as_each_group_deals_them():
  """Found 2026-12-07 (thirty-seventh session): the plan checked the re-dealt clients of the first N for every
  later N, so a Dirichlet study with two N was refused ("num_samples 500 is larger than the data of clients
  [(1, 470), (3, 95)]") although its runs leave those clients out, each for its own N (the dealt clients here,
  synthetic_tiny at alpha 0.1: 2, 95, 470 and 633 windows)."""
  study = S.override(S.preset("har_multistep"), {**TINY, "num_clients": "4", "dirichlet_alphas": "0.1",
                                                 "samplings": "shuffle", "multi_step": "50:10:5,500:100:5"})
  plan = S.make_plan(study)                                          # checked against the data: not refused
  assert sorted(t.config["multi_step"][0] for t in plan.tasks) == [50, 500]
  with pytest.raises(ValueError, match=re.escape("none of the 4 re-dealt clients holds N=700 windows (the largest "
                                                 "holds 633)")):
    S.make_plan(S.override(study, {"multi_step": "50:10:5,700:100:7"}))


@pytest.mark.parametrize("args,message", [
    (["run", "har_sampling", "--set=num_samples=301"], "num_samples 301 is larger than the data of clients"),
    (["run", "har_multistep", "--set=multi_step=400:80:5"], "lower multi_step's N"),
    (["run", "har_sampling", "--set=num_samples=301", "--dry_run"], "(subject, windows) [(0, 300), (1, 300)"),
])
def test_n_larger_than_a_clients_data_is_refused_before_anything_is_written(args, message, tmp_path, capsys):
  """synthetic_tiny's clients hold 300 windows each: N = 301 is impossible, N = 300 is not."""
  tiny = ["--set=datasets=synthetic_tiny", "--set=states=untrained", "--set=models=tinyhar"]
  rc = cli.call(study_cli.main, study_cli.FLAGS, [*args, *tiny, f"--study_dir={tmp_path / 's'}"])
  err = capsys.readouterr().err
  assert rc == 2 and message in err and "num_clients" in err, err
  ok = [a.replace("301", "300").replace("400:80:5", "300:60:5") for a in args]
  rc = cli.call(study_cli.main, study_cli.FLAGS, [*ok, *tiny, f"--study_dir={tmp_path / 's'}", "--dry_run"])
  assert rc == 0, capsys.readouterr().err


def test_a_study_refuses_trained_models_of_other_data_before_any_work(tmp_path, capsys, monkeypatch):
  from jaxleak import data as D, models
  from jaxleak.runs import fold_training as FT
  ds = D.load("synthetic_tiny", scale=0.5, seed=1)                        # the study's default seed is 1
  model = models.build("tinyhar", ds.num_classes)
  FT.train_folds(model, D.make_clients(ds), FT.Folds((0,)), ds.num_classes, FT.TrainConfig(epochs=1, lr=1e-3),
                 checkpoint_path=FT.checkpoint_path(str(tmp_path / "ck_synthetic_tiny")), dataset_name=ds.name)
  fields = {"datasets": "synthetic_tiny", "models": "tinyhar", "states": "trained",
            "checkpoint_dir": str(tmp_path / "ck_{dataset}")}
  with pytest.raises(ValueError, match=r"has no trained model holding out subjects \[1, 2, 3\]; train every fold"):
    S.make_plan(S.override(S.preset("har_sampling"), {**fields, "synthetic_scale": "0.5"}))
  fields["num_clients"] = "1"                                               # subject 0: the one fold trained
  S.make_plan(S.override(S.preset("har_sampling"), {**fields, "synthetic_scale": "0.5"}))     # the data it saw
  base = ["run", "har_sampling", *[f"--set={k}={v}" for k, v in fields.items()], f"--study_dir={tmp_path / 's'}"]
  for wrong in (["--set=synthetic_scale=1.0"], ["--set=synthetic_scale=0.5", "--set=seeds=2"]):
    rc = cli.call(study_cli.main, study_cli.FLAGS, base + wrong)
    err = capsys.readouterr().err
    assert rc == 2 and "trained on other data than this run's: 4 of 4 subjects differ" in err, err
  rc = cli.call(study_cli.main, study_cli.FLAGS, base + ["--set=synthetic_scale=0.5", "--set=head_bias=false",
                                                         "--set=attacks=llg"])
  err = capsys.readouterr().err
  assert rc == 2 and "holds models of another architecture or head than the study's tinyhar (head_bias=False" in err
  with monkeypatch.context() as m:                                          # weights of a diverged training
    m.setattr(FT, "nonfinite_folds", lambda params, num_folds: [])
    FT.train_folds(model, D.make_clients(ds), FT.Folds((0,)), ds.num_classes, FT.TrainConfig(epochs=1, lr=1e15),
                   checkpoint_path=FT.checkpoint_path(str(tmp_path / "nan_synthetic_tiny")), dataset_name=ds.name)
  nan = [a.replace(f"{tmp_path / 'ck_'}", f"{tmp_path / 'nan_'}") for a in base]
  rc = cli.call(study_cli.main, study_cli.FLAGS, nan + ["--set=synthetic_scale=0.5"])
  err = capsys.readouterr().err
  assert rc == 2 and "the models holding out subjects [0] have non-finite weights" in err, err


def test_cost_estimate_counts_llg_star_dummies_per_attacked_model():
  from jaxleak.runs.study.cost import estimate_cost, llg_star_passes
  assert llg_star_passes(["wainakh"], 19, 100) == 19 * 100                        # C batches of N dummies
  assert llg_star_passes(["har"], 4, 10) == 4 * 10 + 4 * 3                         # + C (C - 1) for the offsets
  assert llg_star_passes(["wainakh", "har"], 4, 10) == 40 + 52
  assert llg_star_passes([], 19, 100) == 0
  tiny = dict(TINY, samplings="sequential", num_clients="3")
  plan = S.make_plan(S.override(S.preset("har_sampling"), tiny))
  trained = S.make_plan(S.override(S.preset("har_sampling"), dict(tiny, states="trained")), check_inputs=False)
  (untrained_cost,), (trained_cost,) = estimate_cost(plan).values(), estimate_cost(trained).values()
  # The same updates; a trained run estimates LLG* for each of its 3 folds instead of once (C = 5, N = 100).
  assert trained_cost - untrained_cost == 2 * 5 * 100
  # Groups attacking the same model with the same N share the estimate: counted once, in the first group.
  both = estimate_cost(S.make_plan(S.override(S.preset("har_sampling"), dict(tiny, samplings="sequential,shuffle"))))
  shuffle = estimate_cost(S.make_plan(S.override(S.preset("har_sampling"), dict(tiny, samplings="shuffle"))))
  assert sum(both.values()) == untrained_cost + sum(shuffle.values()) - 5 * 100


def test_cost_estimate_of_eavesdrop_follows_the_allocation_each_kind_draws():
  from jaxleak.runs.study import spec
  from jaxleak.runs.study.cost import estimate_cost
  cost = lambda name, **v: sum(estimate_cost(S.make_plan(S.override(S.preset(name), {"dataset": "digits", **v}),
                                                         check_inputs=False)).values())
  # Found 2026-12-04 (fourteenth session): every kind was costed as the main-label allocation, so Whole
  # Determination's estimate moved with main_labels (which it does not read) and not with its own label totals.
  wd = cost("eavesdrop_whole_determination", wd_trials="1")
  assert cost("eavesdrop_whole_determination", wd_trials="1", wd_total_per_label="5000") == pytest.approx(
      wd * 5000 / spec.WD_FIELDS["wd_total_per_label"])
  dirichlet = cost("eavesdrop_dirichlet", dirichlet_alpha="1")
  assert cost("eavesdrop_dirichlet", dirichlet_alpha="1", samples_per_participant="512") == pytest.approx(
      2 * dirichlet)
  # The attacker as a participant recomputes its own upload in the rounds that select it: one upload more at most.
  from jaxleak.runs.study.engine import eavesdrop_config
  k = eavesdrop_config(S.make_plan(S.override(S.preset("eavesdrop_dirichlet"), {"dataset": "digits"}),
                                   check_inputs=False).groups[0].tasks[0].config).num_selected
  assert cost("eavesdrop_dirichlet", dirichlet_alpha="1", attacker_participates="true") == pytest.approx(
      dirichlet * (k + 11) / (k + 10))


def test_a_dry_run_prices_each_group_by_its_models_flops():
  """Window passes alone priced a TinyHAR window like a DeepConvLSTM one (35-40x dearer). Now each group's FLOPs are
  its passes x one example's forward FLOPs: matmuls as the architectures are written (test_flops.py) plus
  element-wise work."""
  from jaxleak import data as D
  from jaxleak.runs.study.cost import describe_with_cost, estimate_cost, estimate_flops
  plan = S.make_plan(S.override(S.preset("har_sampling"), dict(TINY, models="deepconvlstm,tinyhar",
                                                                samplings="shuffle")))
  passes, work = estimate_cost(plan), estimate_flops(plan)
  per_pass = {g.tasks[0].config["model"]: work[g.key] / passes[g.key] for g in plan.groups}
  ds = D.load("synthetic_tiny")
  matmul = deepconvlstm_forward_flops(ds.num_channels, ds.num_classes)
  assert matmul < per_pass["deepconvlstm"] < 1.05 * matmul
  assert per_pass["tinyhar"] < per_pass["deepconvlstm"] / 10
  # Eavesdrop: the digits MLP, 64 -> 256 -> 64 -> 10, per example.
  eav = S.make_plan(S.override(S.preset("eavesdrop_tables"), {"dataset": "digits", "model": "mlp"}),
                    check_inputs=False)
  (g,) = eav.groups
  mlp = 2 * (64 * 256 + 256 * 64 + 64 * 10)
  assert mlp < estimate_flops(eav)[g.key] / estimate_cost(eav)[g.key] < 1.05 * mlp
  # The text: every group's TFLOP, the total, what is left once a group is done, the floor at a given peak.
  total = sum(work.values())
  left = work[plan.groups[1].key]
  out = describe_with_cost(plan, done={t.key for t in plan.groups[0].tasks}, peak_gflops=left / 1e9 / 60)
  assert f"{left / 1e12:.3g} TFLOP" in out.splitlines()[2]
  assert f"{total / 1e12:.3g} TFLOP" in out and f"still to run: {left / 1e12:.3g} TFLOP" in out
  assert "FLOP floor: 60 s at this machine's f32 matmul peak" in out and "not a forecast" in out
  assert "FLOP floor: 0.9 s at" in describe_with_cost(plan, peak_gflops=total / 1e9 / 0.9)   # not "1 s" or "0 s"
  assert "not priced above" not in out                               # a few tasks: nothing worth saying
  sweep = S.make_plan(S.override(S.preset("har_ldp"), {**TINY, "samplings": "shuffle", "ldp_sigmas": "0,lin:0.1:1:10",
                                                       "ldp_taus": "0,lin:0.1:1:10"}), check_inputs=False)
  assert ("not priced above: each of the 121 HAR tasks' attacks, scores and record after its group's pass (LDP "
          "sweeps; ~4 ms a task") in describe_with_cost(sweep, peak_gflops=100.0)   # a sweep's own work, said


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
  rc = cli.call(study_cli.main, study_cli.FLAGS, ["run", "har_ldp", "--dry_run", "--set=datasets=synthetic_tiny",
                                                  "--set=models=tinyhar", f"--study_dir={tmp_path / 's'}",
                                                  "--set=checkpoint_dir=/nonexistent/{dataset}_{model}"])
  out = capsys.readouterr().out
  assert rc == 0 and "54 tasks in 6 groups" in out and "window passes" in out     # 2 states x 3 samplings x 9
  assert "TFLOP" in out and "FLOP floor: " in out and "GFLOP/s, measured now" in out
  # The trained half has no checkpoints: the plan is shown, then what a run would refuse, with the command to fix it.
  assert out.rstrip().splitlines()[-1].startswith("note: a run would stop here: 1 trained-model checkpoint(s) "
                                                  "missing, e.g. /nonexistent/synthetic_tiny_tinyhar; train them")


def test_a_dry_run_needs_no_study_dir_and_the_rest_do(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  rc = cli.call(study_cli.main, study_cli.FLAGS, ["run", "har_sampling", "--dry_run", "--set=datasets=synthetic_tiny",
                                                  "--set=models=tinyhar", "--set=states=untrained"])
  out = capsys.readouterr().out
  assert rc == 0 and "3 tasks in 3 groups" in out and "0/1 done" in out, out
  assert list(tmp_path.iterdir()) == []
  for args in (["run", "har_sampling"], ["status"], ["collect"]):
    rc = cli.call(study_cli.main, study_cli.FLAGS, args)
    assert rc == 2 and "--study_dir is required" in capsys.readouterr().err


def test_one_folder_holds_one_study(tmp_path, capsys):
  # Before 2026-12-04 a run with other settings replaced study.json silently, and status and collect lost sight of
  # the stored study's tasks (shards launched with different --set values into one folder ended that way).
  def plan(**values):
    return S.make_plan(S.override(S.preset("har_sampling"), {**TINY, **values}), check_inputs=False)
  store, notes = S.Store(str(tmp_path / "s")), []
  S.adopt_folder(plan(samplings="shuffle,sequential"), store, progress=notes.append)
  stored = store.read_study()
  for other, diff in ((plan(samplings="shuffle", num_clients="3"), "num_clients: stored 2, now 3"),
                      (S.make_plan(S.override(S.preset("har_ldp"), TINY), check_inputs=False),
                       "study: stored 'har_sampling', now 'har_ldp'")):
    with pytest.raises(ValueError, match=re.escape(f"holds another study ({diff}")):
      S.adopt_folder(other, store, progress=notes.append)
    assert store.read_study() == stored
  # A sub-grid (a shard run with narrower --set) keeps the folder's study; a larger grid replaces it.
  S.adopt_folder(plan(samplings="sequential"), store, progress=notes.append)
  assert store.read_study() == stored and "every task of this run is part of the study already" in notes[-1]
  S.adopt_folder(plan(samplings="shuffle,sequential,balanced"), store, progress=notes.append)
  assert store.read_study()["parts"][0]["samplings"] == ["shuffle", "sequential", "balanced"]
  # A study.json this version cannot read is replaced, and said.
  with open(os.path.join(store.root, "study.json"), "w") as f:
    f.write('{"name": "x", "parts": [{"type": "har", "no_such_field": 1}]}')
  S.adopt_folder(plan(), store, progress=notes.append)
  assert store.read_study()["name"] == "har_sampling" and "cannot read" in notes[-1]
  # The command refuses before any work, in one line.
  rc = cli.call(study_cli.main, study_cli.FLAGS, ["run", "har_sampling", f"--study_dir={store.root}",
                                                  *[f"--set={k}={v}" for k, v in {**TINY, "num_clients": "3"}.items()]])
  assert rc == 2 and "holds another study (num_clients: stored 2, now 3" in capsys.readouterr().err
  assert not os.path.exists(os.path.join(store.root, "records"))
  # A folder without a study holding other files (--study_dir=. in a project): refused, its index.json untouched.
  project = tmp_path / "project"
  project.mkdir()
  (project / "index.json").write_text("{}")
  with pytest.raises(ValueError, match=re.escape("holds no study but other files (index.json)")):
    S.adopt_folder(plan(), S.Store(str(project)), progress=notes.append)
  assert os.listdir(project) == ["index.json"]


def test_whole_determination_is_a_study_task_recorded_as_a_direct_run(tmp_path):
  from jaxleak.runs import eavesdrop as EV
  from jaxleak.runs.study import spec
  values = {"dataset": "digits", "num_participants": "12", "fraction": "0.25", "samples_per_label": "16",
            "local_lr": "0.05", "wd_trials": "1", "wd_total_per_label": "120", "wd_stages": "0.3",
            "wd_window": "2", "wd_max_rounds": "30"}
  st = S.override(S.preset("eavesdrop_whole_determination"), values)
  assert spec.from_json(spec.to_json(st)) == st
  plan = S.make_plan(st)
  (task,) = plan.tasks
  assert task.kind == "whole_determination" and task.config["wd_stages"] == [0.3]
  store = S.Store(str(tmp_path / "s"))
  S.run_plan(plan, store, progress=None)
  rec = store.read(task.key)["results"]
  (direct,) = EV.run_whole_determination(engine.eavesdrop_config(task.config),
                                         engine.whole_determination_config(task.config))
  (trial,) = rec["trials"]
  assert (trial["round"], trial["predicted"], trial["success"]) == (direct.round, list(direct.predicted),
                                                                    direct.success)
  path, missing = collect.collect(plan, store)
  assert missing == 0
  with open(os.path.join(path, "whole_determination.csv")) as f:
    (row,) = list(csv.DictReader(f))
  assert row["wd_stages"] == "0.3" and float(row["success"]) == float(direct.success)
  # Adding Whole Determination to the paper preset left the rounds tasks (and their record keys) as they were.
  rounds = [t for t in S.make_plan(S.preset("eavesdrop_paper"), check_inputs=False).tasks if t.kind == "eavesdrop"]
  assert rounds and not any(k.startswith("wd_") for t in rounds for k in t.config)


@pytest.mark.parametrize("value,message", [
    ("wd_trials=0", "wd_trials must be a positive integer"), ("wd_stages=1.5", "in (0, 1]"),
    ("wd_stages=0.85,0.5", "wd_stages must be increasing"), ("wd_methd=ward", "unknown study field(s) ['wd_methd']"),
    ("wd_method=bogus", "wd_method: unknown linkage 'bogus'; valid: ward"),
    ("wd_num_clusters=0", "wd_num_clusters must be a positive integer"),
    ("wd_factors=2,1", "wd_factors must be at least two group sizes in (0, 1]"),
    # Checked against the data while planning (digits: 10 labels), not when the group's trials start.
    ("wd_factors=1,1,1,1,1,1,1,1,1,1,1", "splits 10 labels: factors (11 groups)"),
    ("wd_num_clusters=11", "num_clusters (11) must not exceed")])
def test_bad_whole_determination_fields_are_refused(value, message, tmp_path, capsys):
  rc = cli.call(study_cli.main, study_cli.FLAGS, ["run", "eavesdrop_whole_determination", "--set=dataset=digits",
                                                  f"--set={value}", f"--study_dir={tmp_path / 's'}", "--dry_run"])
  err = capsys.readouterr().err
  assert rc == 2 and message in err, err


def test_report_of_a_study_holds_its_records_numbers(ldp_study, tmp_path):
  pytest.importorskip("matplotlib")
  pytest.importorskip("dp_accounting")
  from jaxleak import accounting
  from jaxleak.runs import report
  plan, store = ldp_study
  out, rep = report.write_report(store.root, str(tmp_path / "rep"))
  kinds = sorted(re.match(r"figures/([a-z0-9]+-[a-z]+)", f.path).group(1) for f in rep.figures)
  assert kinds == ["fig2-attacks"] + ["fig4-confusion"] * 3 + ["ldp-tradeoff"]
  rows = list(csv.DictReader(open(os.path.join(out, "tables", "har_summary.csv"))))
  for task in plan.tasks:
    res = store.read(task.key)["results"]["attacks"]
    for attack, r in res.items():
      (row,) = [x for x in rows if float(x["sigma"]) == task.config["sigma"] and float(x["tau"]) == task.config["tau"]
                and x["attack"] == T.attack_name(attack)]
      assert (float(row["LnAcc"]), float(row["LnAcc std"])) == tuple(r["summary"]["lnacc"])
      # The recorded confusion holds every true label once: its rows sum to the clients' class totals.
      np.testing.assert_array_equal(np.sum(r["confusion"], axis=1), np.sum(r["class_total"], axis=0))
  eps = {(r["sigma"], r["tau"]): r for r in csv.DictReader(open(os.path.join(out, "tables", "ldp_epsilon.csv")))}
  assert float(eps[("0.1", "0.5")]["epsilon (composed, exact)"]) == accounting.gaussian_epsilon(
      0.1, 0.5, method="exact").value
  assert eps[("0.0", "1.0")]["note"] == "no noise: a deterministic release"


def _two_group_study():
  return S.override(S.preset("har_sampling"), {**TINY, "attacks": "ebi", "samplings": "sequential",
                                               "multi_step": "20:10:2,30:10:3"})


def test_a_group_another_process_runs_is_skipped_and_shown_running(tmp_path):
  import fcntl
  plan = S.make_plan(_two_group_study())
  assert len(plan.groups) == 2
  store = S.Store(str(tmp_path))
  busy = plan.groups[0]
  path = store.claim_path(busy.key)
  os.makedirs(os.path.dirname(path))
  with open(path, "w") as held:          # another open file description: flock conflicts as across processes
    fcntl.flock(held, fcntl.LOCK_EX)
    lines = []
    summary = S.run_plan(plan, store, progress=lines.append)
    assert summary.groups_busy == [busy.label]
    assert not any(store.has(t.key) for t in busy.tasks)
    assert all(store.has(t.key) for t in plan.groups[1].tasks)
    assert any("being run by another process (holder unknown); skipped" in line for line in lines)
    assert "1 group still running in another process" in lines[-1] and "their records appear" in lines[-1]
    status = S.status(plan, store).split("\n")
    assert status[1].endswith("0/1 done (running now: holder unknown)") and status[2].endswith("1/1 done")
  assert "running now" not in S.status(plan, store)              # released: nobody runs it
  summary = S.run_plan(plan, store, progress=None)
  assert summary.groups_busy == [] and summary.tasks_written == 1 and store.has(busy.tasks[0].key)


def test_a_group_run_deletes_what_stopped_writes_of_its_records_left_and_nothing_else(tmp_path):
  """Found 2026-12-07 (thirty-eighth session, noticed; mended in the thirty-ninth): a study killed while writing a
  record or its timings left the temporary file (".tmp-<8>-<key>.json") in records/ or timings/ for good, one
  more at every such kill. The process that claims a group deletes its tasks' leftovers; those of a group another
  process holds (maybe a live write) and of files that are no task's stay."""
  import fcntl
  plan = S.make_plan(_two_group_study())
  store = S.Store(str(tmp_path))
  busy, free = plan.groups
  left = lambda key: [f".tmp-{tag}-{key}.json" for tag in ("k2b_x9q0", "abcdefgh")]
  kept = left(busy.tasks[0].key) + left("0123abcd") + [f".tmp-short-{free.tasks[0].key}.json"]
  for kind in ("records", "timings"):
    os.makedirs(os.path.join(store.root, kind))
    for name in kept + left(free.tasks[0].key):
      open(os.path.join(store.root, kind, name), "w").write("{half")
  path = store.claim_path(busy.key)
  os.makedirs(os.path.dirname(path))
  with open(path, "w") as held:
    fcntl.flock(held, fcntl.LOCK_EX)
    assert S.run_plan(plan, store, progress=None).groups_busy == [busy.label]
  for kind in ("records", "timings"):
    assert sorted(f for f in os.listdir(os.path.join(store.root, kind)) if f.startswith(".")) == sorted(kept), kind
  S.run_plan(plan, store, progress=None)
  for kind in ("records", "timings"):
    assert sorted(f for f in os.listdir(os.path.join(store.root, kind)) if f.startswith(".")) == sorted(kept[2:])


def test_the_collect_command_a_run_ends_with_works_pasted_into_a_shell(tmp_path):
  """Found 2026-12-07 (thirty-ninth session): `--study_dir=/x/my study` ended its run with `collect --study_dir=/x/my
  study`, two words to a shell."""
  import shlex
  plan = S.make_plan(S.override(S.preset("har_sampling"), {**TINY, "samplings": "sequential", "attacks": "ebi"}))
  lines, store = [], S.Store(str(tmp_path / "my study"))
  S.adopt_folder(plan, store, progress=None)
  S.run_plan(plan, store, progress=lines.append)
  command = shlex.split(lines[-1].split("(collect: ", 1)[1].rstrip(")"))
  assert command[:4] == ["python", "-m", "jaxleak.study", "collect"], command
  assert cli.call(study_cli.main, study_cli.FLAGS, command[3:]) == 0
  assert os.path.isfile(tmp_path / "my study" / "tables" / "results.csv")


def test_a_group_finished_elsewhere_while_waiting_is_not_computed_again(tmp_path):
  import shutil
  plan = S.make_plan(_two_group_study())
  other = S.Store(str(tmp_path / "other"))
  S.run_plan(plan, other, progress=None)
  store, second = S.Store(str(tmp_path / "shared")), plan.groups[1]
  src = os.path.join(other.root, "records", second.tasks[0].key + ".json")

  def progress(line):                    # while the first group runs, "another process" stores the second
    if "group 1/2" in line:
      shutil.copy(src, os.path.join(store.root, "records"))
  summary = S.run_plan(plan, store, progress=progress)
  assert summary.tasks_written == 1 and summary.groups_busy == []
  assert open(os.path.join(store.root, "records", os.path.basename(src)), "rb").read() == open(src, "rb").read()


def test_wait_runs_what_a_held_group_leaves_undone_once_it_is_released(tmp_path):
  import fcntl
  import threading
  plan = S.make_plan(_two_group_study())
  store, held = S.Store(str(tmp_path)), plan.groups[0]
  path = store.claim_path(held.key)
  os.makedirs(os.path.dirname(path))
  holder = open(path, "w")
  fcntl.flock(holder, fcntl.LOCK_EX)     # "another process" holds the first group, then dies without its record
  lines = []

  def progress(line):
    lines.append(line)
    if "waiting for the process running it" in line:
      threading.Timer(0.5, holder.close).start()        # released a moment after this process starts waiting
  summary = S.run_plan(plan, store, progress=progress, wait=True)
  assert summary.groups_busy == [] and summary.tasks_written == 2
  assert all(store.has(t.key) for t in plan.tasks)
  order = [line for line in lines if line.startswith("  group")]
  assert "back to it later" in order[0] and "[" + plan.groups[1].label + "]: 1/1 tasks" in order[1]
  assert "waiting for the process running it" in order[2] and "1/1 tasks" in order[3]


@pytest.mark.parametrize("args, message", [
    (["--executor=ray"], "--wait is for the local executor of one process"),
    (["--distributed"], "drop it or --distributed"),
])
def test_wait_is_refused_where_groups_are_not_shared_through_the_folder(args, message, tmp_path, capsys):
  assert cli.call(study_cli.main, study_cli.FLAGS, ["run", "har_sampling", f"--study_dir={tmp_path}", "--wait",
                                                    *args]) == 2
  assert message in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("{oops", "damaged (not JSON"), ("[]", "damaged (a JSON list, not a study)"), ("", "damaged (not JSON"),
    ('{"name": "x"}', "does not describe a study this jaxleak can read (missing field 'parts')"),
    ('{"name": "x", "parts": [{"type": "har", "models": 5}]}', "does not describe a study this jaxleak can read"),
])
def test_a_damaged_study_json_is_named_with_its_fix_and_a_run_replaces_it(ldp_study, tmp_path, capsys, text,
                                                                          message):
  """Found 2026-12-04 (sixteenth session): status and collect said "error: parts" or "list indices must be integers
  or slices, not str", naming neither the file nor the fix."""
  import shutil
  from jaxleak import report
  plan, store = ldp_study
  root = tmp_path / "copy"
  shutil.copytree(store.root, root)
  (root / "study.json").write_text(text)
  for command in ("status", "collect"):
    assert cli.call(study_cli.main, study_cli.FLAGS, [command, f"--study_dir={root}"]) == 2
    err = capsys.readouterr().err
    assert f"{root}/study.json" in err and message in err and "rerun the `python -m jaxleak.study run" in err, err
  assert cli.call(report.main, report.FLAGS, [str(root), f"--output_dir={tmp_path / 'report'}"]) == 2
  assert message in capsys.readouterr().err
  notes = []
  S.adopt_folder(plan, S.Store(str(root)), progress=notes.append)       # what the rerun does first
  assert "cannot read" in notes[-1] and S.Store(str(root)).read_plan().tasks == plan.tasks


def test_a_file_system_without_locks_runs_every_group_and_says_it_cannot_share(tmp_path, monkeypatch):
  import errno
  from jaxleak import storage

  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")
  monkeypatch.setattr(storage.fcntl, "flock", no_locks)
  plan, lines = S.make_plan(_two_group_study()), []
  summary = S.run_plan(plan, S.Store(str(tmp_path)), progress=lines.append)
  assert summary.tasks_written == 2 and summary.groups_busy == []
  notes = [line for line in lines if "has no locks" in line]
  assert len(notes) == 1 and "would compute them again" in notes[0]


def _recording(fn, returned: list):
  """`fn`, appending each value it returns to `returned`."""
  def wrapped(*args, **kwargs):
    returned.append(fn(*args, **kwargs))
    return returned[-1]
  return wrapped


def test_a_chunk_size_given_to_a_study_computes_its_har_groups_and_is_in_their_timings(tmp_path, capsys, monkeypatch):
  """`study run --chunk_size=2`: every HAR group's updates vmapped 2 at a time (a full backward pass takes 1 by
  default on XLA:CPU, the forward-only pass 8), the records' per-client metrics those of the default, the keys
  the same (how, not what), and the chunk in each task's timings file."""
  chunks = []
  monkeypatch.setattr(L.LeakageConfig, "vmap_chunk", _recording(L.LeakageConfig.vmap_chunk, chunks))
  tiny = [f"--set={k}={v}" for k, v in TINY.items()] + ["--set=samplings=sequential", "--set=attacks=ebi,llbg",
                                                         "--set=ldp=0:0,0.1:1.0"]
  runs = {}
  for name, extra in (("default", []), ("two", ["--chunk_size=2"])):
    chunks.clear()
    root = tmp_path / name
    assert cli.call(study_cli.main, study_cli.FLAGS, ["run", "har_ldp", *tiny, f"--study_dir={root}", *extra]) == 0
    runs[name] = (set(chunks), S.Store(str(root)))
  capsys.readouterr()
  assert runs["default"][0] == {1} and runs["two"][0] == {2}       # the LDP group's norms: a full backward pass
  plan = runs["two"][1].read_plan()
  assert len(plan.tasks) == 2
  for task in plan.tasks:
    ours, theirs = (runs[n][1].read(task.key)["results"]["attacks"] for n in ("default", "two"))
    for attack in ("ebi", "llbg"):
      assert ours[attack]["clients"] == theirs[attack]["clients"]
    timings = json.loads((tmp_path / "two" / "timings" / f"{task.key}.json").read_text())
    assert timings["chunk_size"] == 2
  from jaxleak.runs.study import executors, spec                    # what a Ray task runs, given the chunk
  chunks.clear()
  assert executors._run_group(spec.to_json(plan.study), plan.groups[0].key, str(tmp_path / "ray"), 2) == (2, False)
  assert set(chunks) == {2}


def test_the_accelerator_choices_run_here_and_give_the_cpus_records(tmp_path, monkeypatch):
  """What jaxleak chooses differently on a GPU or TPU (64 and 256 updates vmapped per call, 6,400 windows' worth,
  where XLA:CPU takes 1 for a full backward pass; LDP settings per sweep call a power of two, here 32 for 21, where
  XLA:CPU takes 16) runs on this CPU with the backend's name patched, and gives every record's per-client metrics
  of the CPU's own choices: the device run (benchmarks/gpu.sh, minutes that are scarce) then meets no path that
  never ran."""
  tiny = dict(datasets=("synthetic_tiny",), models=("tinyhar",), states=("untrained",), samplings=("sequential",),
              num_clients=2)
  ldp = ((0.0, 0.0),) + tuple((s, t) for s in (0.0, 0.01, 0.1, 1.0) for t in (0.1, 0.5, 1.0, 2.0, 5.0))
  plan = S.make_plan(S.Study("choices", (S.HarGrid(**tiny, ldp=ldp, attacks=("ebi", "llbg", "ilrg")),
                                         S.HarGrid(**tiny, multi_step=((20, 10, 2),), attacks=("ebi", "ilrg")))))
  chunks, per_call = [], []
  monkeypatch.setattr(L.LeakageConfig, "vmap_chunk", _recording(L.LeakageConfig.vmap_chunk, chunks))
  monkeypatch.setattr(engine, "settings_per_call", _recording(engine.settings_per_call, per_call))
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")     # the CPU's choices, on whatever runs the suite
  S.run_plan(plan, S.Store(str(tmp_path / "cpu")), progress=None)
  assert set(chunks) == {1} and set(per_call) == {16}            # both groups take a full backward pass
  chunks.clear(), per_call.clear()
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  S.run_plan(plan, S.Store(str(tmp_path / "gpu")), progress=None)
  assert set(chunks) == {64, 256} and set(per_call) == {32}       # the norms of N = 100; S B = 20 windows
  cpu, gpu = S.Store(str(tmp_path / "cpu")), S.Store(str(tmp_path / "gpu"))
  for task in plan.tasks:
    ours, theirs = cpu.read(task.key)["results"]["attacks"], gpu.read(task.key)["results"]["attacks"]
    assert ours.keys() == theirs.keys() == set(task.config["attacks"])
    for attack in ours:
      assert ours[attack]["clients"] == theirs[attack]["clients"], (task.config.get("sigma"), task.config.get("tau"))


def test_a_long_har_group_reports_its_gradient_pass_in_indented_lines(tmp_path, monkeypatch):
  """Between a group's own lines the gradient pass reports (at most every GROUP_PROGRESS_EVERY_S: 0 here; a
  group shorter than that adds no line), indented under its group."""
  monkeypatch.setattr(engine, "GROUP_PROGRESS_EVERY_S", 0.0)
  plan = S.make_plan(S.override(S.preset("har_sampling"), {**TINY, "attacks": "ebi", "samplings": "sequential"}))
  lines = []
  S.run_plan(plan, S.Store(str(tmp_path)), progress=lines.append)
  group = next(i for i, line in enumerate(lines) if line.startswith("  group 1/1 ["))
  inner = [line for line in lines[:group] if line.startswith("    ")]
  assert inner and all(re.match(r"    (gradients: \d+/\d+ updates \(|LDP sweep: \d+% of 1 settings x \d+ updates "
                                r"done; ETA \d+ s|records: 0/1 scored)", line) for line in inner), lines
  assert [line.split(":")[0] for line in inner][-2:] == ["    LDP sweep", "    records"]     # after the pass
  monkeypatch.setattr(engine, "GROUP_PROGRESS_EVERY_S", 3600.0)
  lines.clear()
  S.run_plan(plan, S.Store(str(tmp_path / "again")), progress=lines.append)
  assert not [line for line in lines if line.startswith("    ")], lines


def test_list_prints_every_preset_with_its_summary_in_one_column(capsys):
  # Found 2026-12-05 (twenty-third session): names longer than 24 characters pushed their summary out of line.
  assert cli.call(study_cli.main, study_cli.FLAGS, ["list"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert [line.split()[0] for line in lines] == sorted(S.PRESETS)
  starts = {line.index(S.PRESETS[line.split()[0]].summary) for line in lines}
  assert len(starts) == 1, lines


@pytest.mark.parametrize("value,nodes,expected", [
    (None, [0.0], 0.0), (None, [], 0.0), (None, [0.0, 4.0], 1.0), (0, [8.0], 0.0), (0.5, [1.0], 0.5),
    (2, [1.0, 2.0], 2.0),
    (2, [1.0], "no node of this Ray cluster has that many GPUs (the most on one node: 1), so no group could ever "
               "start; give at most 1 (0: on CPUs)."),
    (1, [0.0], "give at most 0, i.e. 0: this cluster has no GPUs."),
    (1.5, [8.0], "above 1 Ray takes whole GPUs only"), (-1, [1.0], "must be a number >= 0"),
    (float("nan"), [1.0], "must be a number >= 0"),
])
def test_ray_tasks_ask_for_a_gpu_where_the_cluster_has_one(value, nodes, expected):
  """Ray sets CUDA_VISIBLE_DEVICES='' for a task that asks for no GPU: before, every group ran on CPUs on a GPU
  cluster (found 2026-12-06, thirty-third session)."""
  from jaxleak.runs.study import executors
  if isinstance(expected, str):
    with pytest.raises(ValueError, match=re.escape(expected)):
      executors.gpus_per_task(value, nodes)
  else:
    assert executors.gpus_per_task(value, nodes) == expected
