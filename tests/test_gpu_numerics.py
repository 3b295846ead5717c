"""What the commands ask of XLA (jaxleak.gpu_numerics), checked without a GPU: float32 matmuls, deterministic
kernels on a GPU (what goes into XLA_FLAGS, and when; nothing on a CPU-only install), and no float scatter in the
hot paths off the CPU. (That XLA:GPU is then deterministic is XLA's promise; benchmarks/gpu.sh's `determinism`
step compares two GPU runs' records byte for byte.)"""
import os
import subprocess
import sys
import textwrap

import pytest

from jaxleak import gpu_numerics as G

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA = ["jax_cuda13_plugin"]
FLAG = "--xla_gpu_deterministic_ops=true"


@pytest.fixture
def jax_not_started(monkeypatch):
  monkeypatch.setattr(G, "backends_started", lambda: False)     # this test process has long started JAX


@pytest.mark.parametrize("platforms,plugins,expected", [
    (None, CUDA, True), (None, ["xla_rocm7"], True), (None, [], False), (None, ["some_tpu_plugin"], False),
    ("cpu", CUDA, False), ("cuda,cpu", CUDA, True), ("gpu", CUDA, True), ("cuda", [], False),
])
def test_a_gpu_is_possible_only_with_a_gpu_plugin_that_jax_platforms_does_not_rule_out(platforms, plugins, expected):
  environ = {} if platforms is None else {"JAX_PLATFORMS": platforms}
  assert G.gpu_possible(environ, plugins) is expected


def test_where_a_gpu_may_be_used_the_flag_is_added_to_xla_flags(jax_not_started):
  environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/d"}
  assert G.configure_determinism(None, environ, CUDA) is True
  assert environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/d {FLAG}"
  assert G.configure_determinism(None, environ, CUDA) is True and environ["XLA_FLAGS"].count(FLAG) == 1   # added once
  assert G.requested(environ) is True


@pytest.mark.parametrize("enabled,environ", [
    (False, {}),                                          # --gpu_determinism=false
    (None, {"JAXLEAK_GPU_DETERMINISM": "off"}),
    (None, {"JAXLEAK_GPU_DETERMINISM": "0"}),
])
def test_switched_off_it_leaves_xla_flags_alone(enabled, environ, jax_not_started):
  assert G.configure_determinism(enabled, environ, CUDA) is False
  assert "XLA_FLAGS" not in environ
  assert environ["JAXLEAK_GPU_DETERMINISM"] in ("off", "0")   # and the processes this one starts agree


def test_a_value_of_the_environment_variable_that_is_neither_on_nor_off_is_refused(jax_not_started):
  environ = {"JAXLEAK_GPU_DETERMINISM": "of"}
  with pytest.raises(ValueError, match=r"^\$JAXLEAK_GPU_DETERMINISM='of': give on or off \(unset: on\)"):
    G.configure_determinism(None, environ, CUDA)
  assert "XLA_FLAGS" not in environ
  assert G.configure_determinism(None, {"JAXLEAK_GPU_DETERMINISM": "ON"}, CUDA) is True


@pytest.mark.parametrize("user,requested", [
    ("--xla_gpu_deterministic_ops=false", False),
    ("--xla_gpu_exclude_nondeterministic_ops=true", True),
    ("--xla_gpu_exclude_nondeterministic_ops", True),
])
def test_an_xla_flags_that_names_determinism_is_the_users_choice(user, requested, jax_not_started):
  environ = {"XLA_FLAGS": user}
  G.configure_determinism(True, environ, CUDA)
  assert environ["XLA_FLAGS"] == user
  assert G.requested(environ) is requested


def test_nothing_changes_on_a_cpu_only_install_or_once_jax_has_started(monkeypatch):
  environ = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}
  monkeypatch.setattr(G, "backends_started", lambda: False)
  assert G.configure_determinism(True, environ, plugins=[]) is False
  monkeypatch.setattr(G, "backends_started", lambda: True)     # XLA has read XLA_FLAGS: too late to change it
  assert G.configure_determinism(True, environ, CUDA) is False
  assert environ["XLA_FLAGS"] == "--xla_backend_optimization_level=0"
  assert G.requested(environ) is None


@pytest.mark.skipif(bool([p for p in G.jax_plugins() if "cuda" in p or "rocm" in p]),
                    reason="a GPU plugin of JAX is installed here")
def test_this_cpu_only_install_has_no_gpu_plugin():
  assert not G.gpu_possible({})


@pytest.fixture
def precision():
  import jax
  before = jax.config.jax_default_matmul_precision
  yield jax.config
  jax.config.update("jax_default_matmul_precision", before)


def test_float32_matmuls_are_float32_unless_the_user_chose(precision):
  precision.update("jax_default_matmul_precision", None)
  assert G.configure_precision() == "float32"                        # not TF32 (recent GPUs) nor bf16 (TPUs)
  precision.update("jax_default_matmul_precision", "tensorfloat32")  # JAX_DEFAULT_MATMUL_PRECISION, say
  assert G.configure_precision() == "tensorfloat32"


def test_study_keys_name_the_matmul_precision_only_where_it_is_not_float32(precision, monkeypatch):
  """Before (thirty-fourth session): precision was provenance only, so a study resumed or sharded on a GPU with
  JAX_DEFAULT_MATMUL_PRECISION=tensorfloat32 (or run from Python, at JAX's TF32 default) stored TF32 records under
  the keys of float32 ones, and `collect` mixed them without a word."""
  from jaxleak.runs import study as S

  def keys():
    return {t.key for t in S.make_plan(S.preset("har_sampling"), check_inputs=False).tasks}
  at_float32 = keys()
  for p in (None, "bfloat16", "tensorfloat32"):        # the CPU computes the same bits at every precision
    precision.update("jax_default_matmul_precision", p)
    assert G.key_fields() == {} and keys() == at_float32
  monkeypatch.setattr(G, "computes_on_cpu", lambda: False)      # a GPU
  seen = []
  for p, fields in (("float32", {}), ("highest", {}), (None, {"matmul_precision": "default"}),
                    ("tensorfloat32", {"matmul_precision": "tensorfloat32"}),
                    ("bfloat16", {"matmul_precision": "bfloat16"})):
    precision.update("jax_default_matmul_precision", p)
    assert G.key_fields() == fields, p
    seen.append(keys())
  assert seen[0] == seen[1] == at_float32                # float32 keys are those of earlier versions
  assert all(not (a & b) for i, a in enumerate(seen[1:]) for b in seen[i + 2:])   # every other precision its own


def test_making_a_plan_does_not_start_jax(tmp_path):
  """A study's plan is made before `jax.distributed.initialize`, which must come before JAX starts its backends
  (the first version of `key_fields` asked `jax.default_backend()`, which starts them)."""
  code = ("from jaxleak import gpu_numerics as G\n"
          "from jaxleak.runs import study as S\n"
          "S.make_plan(S.preset('har_paper'), check_inputs=False)\n"
          "print(G.backends_started(), G.key_fields(), G.computes_on_cpu())\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0 and proc.stdout.split() == ["False", "{}", "True"], proc.stderr[-2000:]


@pytest.mark.parametrize("platforms,plugins,cpu", [("cpu", ["xla_cuda12"], True), ("cuda,cpu", [], False),
                                                   ("", ["xla_cuda12"], False), ("", [], True)])
def test_which_backend_computes_is_read_without_starting_jax(platforms, plugins, cpu, monkeypatch):
  import importlib.util
  monkeypatch.setattr(G, "backends_started", lambda: False)
  monkeypatch.setattr(G, "_platforms", lambda: platforms)
  monkeypatch.setenv("JAX_PLATFORMS", platforms)            # gpu_possible reads the variable
  monkeypatch.setattr(G, "jax_plugins", lambda: plugins)
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "libtpu" else real_find_spec(name))
  assert G.computes_on_cpu() is cpu


def test_a_resumable_run_never_resumes_under_another_precision(precision, monkeypatch, tmp_path):
  import numpy as np
  from jaxleak import storage
  from jaxleak.runs.eavesdrop import EavesdropConfig
  from jaxleak.runs.eavesdrop.rounds import checkpoint_config
  cfg = EavesdropConfig(dataset="digits")
  on_cpu = checkpoint_config(cfg)
  monkeypatch.setattr(G, "computes_on_cpu", lambda: False)      # a GPU
  precision.update("jax_default_matmul_precision", "float32")
  assert checkpoint_config(cfg) == on_cpu and "matmul_precision" not in on_cpu     # stored checkpoints stay valid
  path = str(tmp_path / "rounds.ckpt")
  storage.Checkpointer(path, checkpoint_config(cfg), what="rounds").save({"w": np.zeros(2)}, {"rounds_done": 3})
  precision.update("jax_default_matmul_precision", "tensorfloat32")
  with pytest.raises(storage.CheckpointMismatch, match="matmul_precision"):
    storage.Checkpointer(path, checkpoint_config(cfg), what="rounds").restore({"w": np.zeros(2)})


def test_a_ray_worker_computes_at_the_drivers_precision_and_finds_its_group_by_the_drivers_keys(precision, tmp_path):
  from jaxleak.runs import study as S
  from jaxleak.runs.study import executors, spec
  numerics = {"matmul_precision": "tensorfloat32"}     # a driver on a GPU at TF32
  st = S.override(S.preset("har_sampling"), {"datasets": "synthetic_tiny", "models": "tinyhar", "states": "untrained",
                                             "num_clients": "2", "samplings": "sequential"})
  plan = S.make_plan(st, numerics=numerics)
  assert {t.key for t in plan.tasks}.isdisjoint(t.key for t in S.make_plan(st).tasks)
  setup = {"gpu_share": 0.0, "gpu_determinism_on": True, "cache": None, "numerics": numerics}
  precision.update("jax_default_matmul_precision", "float32")
  written, busy = executors._run_group(spec.to_json(st), plan.groups[0].key, str(tmp_path), setup=setup)
  assert (written, busy) == (1, False) and precision.jax_default_matmul_precision == "tensorfloat32"
  assert os.path.exists(os.path.join(tmp_path, "records", plan.tasks[0].key + ".json"))


def _command_sees(tmp_path, *args, **env_extra) -> str:
  """XLA_FLAGS as a command run through cli.run sees it, with a stand-in CUDA plugin of JAX installed (a
  `jax_plugins` module JAX would find; the command never starts JAX, so it is never loaded)."""
  plugin = tmp_path / "plugins" / "jax_plugins" / "xla_cuda_standin"
  plugin.mkdir(parents=True, exist_ok=True)
  (plugin / "__init__.py").write_text("def initialize():\n  pass\n")
  program = tmp_path / "prog.py"
  program.write_text(textwrap.dedent("""\
      import os
      from absl import flags
      from jaxleak import cli
      FLAGS = flags.FlagValues()
      def main(argv):
        import jax
        print("XLA_FLAGS=" + os.environ.get("XLA_FLAGS", ""), jax.config.jax_default_matmul_precision)
      if __name__ == "__main__":
        cli.run(main, FLAGS)
      """))
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "JAX_PLATFORMS", "JAX_DEFAULT_MATMUL_PRECISION", G.ENV_VAR)}
  env.update(PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path / "plugins")]), **env_extra)
  proc = subprocess.run([sys.executable, str(program), "--compilation_cache=off", *args], capture_output=True,
                        text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout.strip()


def test_a_command_asks_for_float32_and_where_a_gpu_plugin_is_installed_for_determinism_unless_told_not_to(tmp_path):
  # (The environment variables' part is configure_determinism's and configure_precision's, tested above.)
  assert _command_sees(tmp_path) == f"XLA_FLAGS={FLAG} float32"
  assert _command_sees(tmp_path, "--gpu_determinism=false") == "XLA_FLAGS= float32"
  assert _command_sees(tmp_path, JAX_PLATFORMS="cpu") == "XLA_FLAGS= float32"


def _float_scatters(closed) -> list[str]:
  """Names of the float scatter primitives in a jaxpr, sub-jaxprs (loops, conds, calls) included."""
  import jax
  from jax.extend import core as jex_core
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if "scatter" in eqn.primitive.name and jax.numpy.issubdtype(eqn.outvars[0].aval.dtype, jax.numpy.floating):
        found.append(eqn.primitive.name)
      for value in eqn.params.values():
        for sub in value if isinstance(value, (list, tuple)) else [value]:
          if isinstance(sub, jex_core.ClosedJaxpr):
            walk(sub.jaxpr)
          elif isinstance(sub, jex_core.Jaxpr):
            walk(sub)
  walk(closed.jaxpr)
  return found


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_off_the_cpu_backward_passes_and_attacks_have_no_float_scatter(backend, monkeypatch):
  """A float scatter-add is what XLA:GPU runs with atomics, or asked for determinism, as a loop over its indices
  (every backward pass over its batch, an Eavesdrop round over every participant's batch). The cross-entropy's
  gather is one in every backward pass; on the CPU it stays (results bit for bit those of earlier versions)."""
  import jax
  import jax.numpy as jnp
  import optax
  import jaxleak.attacks as A
  from jaxleak import LastLayerGrads, models
  from jaxleak.federated import LocalSteps, apply, client_update_fn, rounds
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  logits = jax.random.normal(jax.random.key(0), (6, 5)) * 3
  labels = jnp.array([0, 4, 2, 2, 1, 3])
  ours = apply.integer_label_ce(logits, labels)
  theirs = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  assert jnp.allclose(ours, theirs, rtol=1e-6, atol=1e-6)
  g = lambda f: jax.grad(lambda z: jnp.mean(f(z, labels)))(logits)
  assert jnp.allclose(g(apply.integer_label_ce), g(optax.softmax_cross_entropy_with_integer_labels), atol=1e-7)

  model = models.build("tinyhar", num_classes=5)
  v = models.init(model, jax.random.key(1), 50, 3)
  x, y = jnp.ones((20, 50, 3)), jnp.arange(20) % 5
  step = client_update_fn(model, LocalSteps(steps=2, batch_size=10, lr=0.1))
  multi = jax.make_jaxpr(step)(v, x, y, jax.random.key(2))
  mlp = models.build("mlp", num_classes=5)
  w = models.init_for_shape(mlp, jax.random.key(3), (8, 8))
  train = rounds.local_train_fn(mlp, rounds.LocalEpochs(epochs=1, batch_size=4, lr=0.1))
  eavesdrop = jax.make_jaxpr(jax.vmap(train, in_axes=(None, 0, 0, 0, 0)))(
      w, jnp.ones((3, 8, 8, 8)), jnp.zeros((3, 8), jnp.int32), jnp.ones((3, 8), bool),
      jax.random.split(jax.random.key(4), 3))
  assert bool(_float_scatters(multi)) == bool(_float_scatters(eavesdrop)) == (backend == "cpu")
  grads = LastLayerGrads(kernel=jnp.ones((7, 16, 5)), bias=jnp.ones((7, 5)))
  for name in ("ebi", "llbg", "llg", "gcd"):
    assert not _float_scatters(jax.make_jaxpr(jax.vmap(lambda gr: A.run(name, gr, 40)))(grads)), name
  # Per-client metrics (once per attack and task): the same values, NaN batches included, without a float scatter.
  from jaxleak import metrics
  truth = jax.random.randint(jax.random.key(5), (9, 4), 1, 6)
  rolled = jax.vmap(lambda row, k: jnp.roll(row, k))(truth, jnp.arange(9) % 3)       # the same totals
  pred = jnp.where(jnp.arange(9)[:, None] == 4, -1, rolled)                           # batch 4: invalid (NaN)
  ids = jnp.array([0, 0, 1, 2, 2, 2, 0, 1, 1])
  found = metrics.client_metrics(truth, pred, ids, 4)
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  expected = metrics.client_metrics(truth, pred, ids, 4)
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  for a, b in zip(found, expected):
    assert jnp.allclose(a, b, rtol=1e-6, equal_nan=True), (a, b)
  assert bool(_float_scatters(jax.make_jaxpr(lambda t, p: metrics.client_metrics(t, p, ids, 4))(truth, pred))) == (
      backend == "cpu")
