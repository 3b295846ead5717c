"""Every entry point refuses bad command lines in one line naming the flag, exits 2, and writes nothing.

Run in-process (jaxleak.cli.call), so each case costs milliseconds unless it needs the data to know it is wrong.
"""
import os
import re
import signal
import subprocess
import sys

import pytest

from experiments import eavesdrop as EX
from experiments import multi_step_leakage as MS
from experiments import single_step_leakage as SS
from experiments import train_models as TM
import jaxleak.attacks as A
from jaxleak import cli

TINY = ["--dataset=synthetic_tiny", "--model=tinyhar"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _program(args, *, popen=False, **env):
  """`python <args>` from the repository root as a user runs it (on the CPU, no compilation cache): the finished
  process (stdout and stderr as text), or with popen=True the running one, its stderr piped."""
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "JAXLEAK_COMPILATION_CACHE": "off", **env}
  if popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, text=True, stderr=subprocess.PIPE, env=env)
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)

BAD = [
    # (entry point, arguments, what the one-line message must contain)
    (SS, ["--clients=abc"], "--clients=abc: 'abc' is not an integer"),
    (SS, ["--clients=1,1"], "[1] listed more than once"),
    (MS, ["--local_lr=nan"], "--local_lr=nan: must be a finite number in (0, inf)."),   # not "(0, inf]"
    (SS, ["--clients="], "--clients is empty"),
    (SS, ["--attacks=ebi,ebi"], "listed more than once"),
    (SS, ["--attacks=ebi,bogus"], "unknown ['bogus']"),
    (SS, ["--attacks="], "--attacks is empty"),
    (SS, ["--attacks=paper,bogus"], "unknown ['bogus']; choose from analytic, "),
    (MS, ["--attacks=all,all"], "--attacks: ['all'] listed more than once"),
    (SS, ["--num_samples=0"], "--num_samples=0: must be a positive integer"),
    (SS, ["--num_samples=abc"], "--num_samples"),
    (SS, ["--chunk_size=-1"], "--chunk_size=-1"),
    (SS, ["--num_clients=0"], "--num_clients=0"),
    (SS, ["--clip=nan"], "--clip=nan: must be a finite number"),
    (SS, ["--ldp_grid", "--noise=0.1"], "--ldp_grid runs no LDP plus the paper's nine (noise, clip) settings, so"),
    (SS, ["--ldp_grid", "--clip=0"], "would be ignored: drop them, or drop --ldp_grid"),
    # Found 2026-12-04 (fourteenth session): without clipping these were ignored, and the run looked clipped.
    (SS, ["--noise=0.1", "--clip_scope=last_layer"], "--clip_scope=last_layer: says how --clip clips, but there"),
    (SS, ["--clip=0", "--clip_granularity=per_example"], "give --clip=<tau> > 0 as well, or drop --clip_granularity"),
    (MS, ["--clip_scope=last_layer"], "--clip_scope=last_layer: says how --clip clips"),
    (SS, ["--noise=-0.1"], "--noise=-0.1"),
    (SS, ["--noise=inf"], "--noise=inf"),
    (SS, ["--synthetic_scale=0"], "--synthetic_scale=0.0"),
    (SS, ["--dataset=nope"], "--dataset"),
    (SS, ["--model=resnet"], "--model"),
    (SS, ["--checkpoint_dir=x"], "--checkpoint_dir is only used with --model_state=trained"),
    (SS, ["stray"], "unexpected arguments ['stray']"),
    (SS, TINY + ["--clients=999"], "unknown subject ids [999]"),
    (SS, TINY + ["--num_samples=100000"], "is larger than the data of clients"),
    (SS, ["--dataset=wear"], "needs --data_dir"),
    (SS, ["--data_dir=/tmp"], "--data_dir is read only with --dataset=wear, wetlab, tal; --dataset=hapt"),
    (SS, ["--dataset=synthetic_tiny", "--data_dir=/tmp"], "--dataset=synthetic_tiny does not use it"),
    (SS, ["--synthetic_scale=0.5"], "--synthetic_scale=0.5 applies to synthetic_wear, synthetic_wetlab, synthetic_"),
    (MS, ["--dataset=wear", "--data_dir=/tmp", "--synthetic_scale=2"], "--dataset=wear is used whole"),
    (TM, ["--synthetic_scale=0.5"], "--synthetic_scale=0.5 applies to"),
    (EX, ["--dataset=mnist", "--synthetic_scale=0.5"], "--dataset=mnist is used whole"),
    (EX, ["--data_dir=/tmp"], "--data_dir is read only with"),
    (MS, ["--local_batch_size=0"], "--local_batch_size=0"),
    (MS, ["--local_lr=nan"], "--local_lr=nan"),
    (MS, ["--local_lr=-1"], "--local_lr=-1.0"),
    (MS, ["--num_samples=100", "--local_batch_size=200"], "local batch size B=200 is larger than the update's N=100"),
    (MS, ["--num_samples=50", "--local_batch_size=7", "--local_steps=3"], "use 21 windows, and the other 29"),
    (TM, ["--epochs=0"], "--epochs=0"),
    (TM, ["--epochs=-1"], "--epochs=-1"),
    (TM, ["--lr=nan"], "--lr=nan"),
    (TM, ["--lr=-1"], "--lr=-1.0"),
    (TM, ["--weight_decay=-1"], "--weight_decay=-1.0"),
    (TM, ["--folds=1,1"], "listed more than once"),
    (TM, TINY + ["--folds=77"], "--folds: [77] are not LOSO held-out subjects"),
    (EX, ["--dropout=1.5"], "--dropout=1.5: must be a finite number in [0, 1)"),
    (EX, ["--fraction=0"], "--fraction=0.0"),
    (EX, ["--fraction=1.5"], "--fraction=1.5"),
    (EX, ["--compression=1"], "--compression=1.0"),
    (EX, ["--rounds=0"], "--rounds=0"),
    (EX, ["--replicates=1099511627776"], "1,099,511,627,776 consecutive seeds (one per replicate/trial) from --seed=0"),
    (EX, ["--local_lr=nan"], "--local_lr=nan"),
    (EX, ["--main_labels=5,3"], "--main_labels"),
    (EX, ["--main_labels=a,b"], "'a' is not an integer"),
    (EX, ["--experiment=whole", "--wd_stages=0.85,0.5"], "--wd_stages=0.85,0.5: must be increasing test accuracies in "
                                                          "(0, 1]"),
    (EX, ["--experiment=whole", "--wd_stages=0.5,1.5"], "--wd_stages=0.5,1.5"),
    # Found 2026-12-04 (thirteenth session): flags another experiment or partition reads were ignored silently.
    (EX, ["--wd_stages=0.5"], "--wd_stages is read only with --experiment=whole; this command line would ignore it"),
    (EX, ["--compression_rates=0.1"], "--compression_rates is read only with --experiment=compression"),
    (EX, ["--sweep=epochs"], "--sweep is read only with --experiment=sweep"),
    (EX, ["--dirichlet_alpha=0.1"], "--dirichlet_alpha is read only with --partition=dirichlet"),
    (EX, ["--partition=dirichlet", "--main_labels=1,2"], "--main_labels is read only with --partition=main_labels"),
    (EX, ["--experiment=whole", "--rounds=5"], "--rounds is read only with the experiments that play a fixed"),
    # Found 2026-12-04 (fourteenth session): Whole Determination ran and ignored these.
    (EX, ["--experiment=whole", "--sniff_margin=0.3"], "--sniff_margin is read only with the experiments other than"),
    (EX, ["--experiment=whole", "--attacker_participates"], "--attacker_participates is read only with the"),
    (EX, ["--experiment=whole", "--replicates=2"], "--wd_trials are its replicates"),
    (EX, ["--experiment=compression", "--compression=0.5"], "--compression is read only with the experiments other"),
    (EX, ["--experiment=dropout", "--dropout=0.1"], "--dropout is read only with the experiments other than dropout"),
    (EX, ["--experiment=sweep", "--local_epochs=2", "--sweep=epochs"], "--local_epochs is what --sweep=epochs varies"),
    (EX, ["--replicates=0"], "--replicates=0"),
    (EX, ["--experiment=compression", "--compression_rates=0.1,1.2"], "[1.2] outside [0, 1)"),
    (EX, ["--experiment=sweep", "--sweep=epochs", "--sweep_values=0,2"], "positive integers"),
    (EX, ["--experiment=sweep", "--sweep=fraction", "--sweep_values=0.5,2"], "in (0, 1]"),
    (EX, ["--experiment=whole", "--wd_factors=1"], "--wd_factors"),
    (EX, ["--dataset=mnist", "--model=tinyhar"], "reads HAR windows [T, channels]; for the image dataset 'mnist'"),
    # Found 2026-12-05 (nineteenth session, a flag fuzzer): finite in Python, inf in float32 (no clipping, infinite
    # noise, an infinite step found only after local training diverged).
    (SS, ["--clip=1e300"], "--clip must be a number in [0, 3.403e+38] (0 = off; it is computed in float32"),
    (SS, ["--noise=1e300"], "--noise must be a number in [0, 3.403e+38]"),
    (MS, ["--local_lr=1e300"], "the learning rate a number in (0, 3.403e+38] (float32)"),
    (EX, ["--local_lr=1e300"], "the learning rate a number in (0, 3.403e+38] (float32)"),
    (EX, ["--ldp_noise=1e300"], "--ldp_noise must be a number in [0, 3.403e+38]"),
    (EX, ["--ldp_clip=1e39"], "--ldp_clip must be a number in [0, 3.403e+38]"),
]


@pytest.mark.parametrize("module,args,message", BAD, ids=[f"{m.__name__.split('.')[-1]} {' '.join(a)}"
                                                          for m, a, _ in BAD])
def test_bad_command_line_is_refused_in_one_line(module, args, message, tmp_path, capsys):
  out = tmp_path / "out"
  flag = "--checkpoint_dir" if module is TM else "--output_dir"
  rc = cli.call(module.main, module.FLAGS, [*args, f"{flag}={out}"])
  err = capsys.readouterr().err
  assert rc == 2
  assert message in err, err
  lines = [l for l in err.splitlines() if l.strip()]
  assert lines[-1].startswith("error: ") and "Traceback" not in err, err
  assert not out.exists(), "a refused command wrote files"


def test_unwritable_output_dir_is_refused_before_the_run(tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("")
  rc = cli.call(SS.main, SS.FLAGS, [*TINY, f"--output_dir={blocker}/sub"])
  assert rc == 2 and "is a file, not a folder" in capsys.readouterr().err
  if os.geteuid() != 0:                                          # root can write anywhere
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert cli.call(SS.main, SS.FLAGS, [*TINY, f"--output_dir={ro}/x"]) == 2


def test_a_full_disk_ends_the_run_in_one_line(tmp_path, capsys, monkeypatch):
  # Found 2026-12-06 on a full tmpfs: the run ended in a traceback after its work (OSError: [Errno 28]).
  import errno
  from jaxleak import storage

  def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(storage.os, "fsync", full)
  out = tmp_path / "out"
  assert cli.call(SS.main, SS.FLAGS, [*TINY, "--clients=1", f"--output_dir={out}"]) == 2
  err = capsys.readouterr().err
  assert err.strip().splitlines()[-1] == (f"error: writing {out}: no space is left on the device. Nothing was half "
                                          "written and whatever was stored before is kept; free space there, or "
                                          "write elsewhere, and run the same command again.") and "Traceback" not in err
  assert os.listdir(tmp_path) == []


def test_an_output_dir_holding_other_files_is_refused_before_the_run(tmp_path, capsys):
  # Before 2026-12-04 the run replaced the folder whole: --output_dir=. deleted the project it was run in.
  (tmp_path / "thesis.tex").write_text("precious")
  for module in (SS, MS):
    rc = cli.call(module.main, module.FLAGS, [*TINY, f"--output_dir={tmp_path}"])
    assert rc == 2 and "is not a folder jaxleak wrote whole (it holds thesis.tex)" in capsys.readouterr().err
  (tmp_path / "rounds").mkdir()
  (tmp_path / "rounds" / "mine.csv").write_text("1")
  rc = cli.call(EX.main, EX.FLAGS, ["--dataset=digits", f"--output_dir={tmp_path}"])
  assert rc == 2 and "(it holds mine.csv)" in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ["rounds", "thesis.tex"]


@pytest.mark.parametrize("name,own", [("experiments.single_step_leakage", "--dataset"),
                                      ("experiments.multi_step_leakage", "--local_steps"),
                                      ("experiments.eavesdrop", "--experiment"),
                                      ("experiments.train_models", "--epochs"),
                                      ("jaxleak.study", "--study_dir"), ("jaxleak.report", "--delta")])
def test_help_lists_the_commands_own_flags(name, own):
  """`--help` shows absl's key flags of the main module; a command's flags live in their own FlagValues, so
  `cli.run` must register them for the program, or --help lists none of them (it did)."""
  from absl import flags
  into = flags.FlagValues()
  flags.DEFINE_string("compilation_cache", None, "the cache", flag_values=into)
  flags.DEFINE_boolean("gpu_determinism", None, "deterministic kernels", flag_values=into)
  import importlib
  cli.adopt_flags(importlib.import_module(name).FLAGS, into, "prog.py")
  short = into.module_help("prog.py")
  assert own in short, short
  assert "--compilation_cache" in short and "--[no]gpu_determinism" in short
  assert into.get_help().index("prog.py:") < into.get_help().index("--" + own.lstrip("-")), "not listed first"


@pytest.mark.parametrize("args, expected", [
    (["experiments/single_step_leakage.py", "--sampling=bogus"],
     "error: flag --sampling=bogus: value should be one of <shuffle|sequential|balanced>"),
    (["-m", "jaxleak.study", "run", "--num_tasks=x"], "error: flag --num_tasks=x: invalid literal for int()"),
    (["experiments/eavesdrop.py", "--aux_fractionn=0.5"], "error: Unknown command line flag 'aux_fractionn'"),
])
def test_a_flag_absl_cannot_parse_is_one_line_and_exit_status_2_as_every_bad_flag(args, expected):
  """Found 2026-12-05 (seventeenth session): as programs, a value of the wrong type or outside an enum, or an
  unknown flag, was absl's two lines ("FATAL Flags parsing error: ...", "Pass --helpshort ...") and exit status
  1, while the README promises one line and status 2 for every bad flag (in-process `cli.call` gave that)."""
  proc = _program(args)
  assert proc.returncode == 2 and proc.stderr.startswith(expected) and proc.stderr.count("\n") == 1, proc.stderr
  assert "(--helpshort lists the flags)" in proc.stderr


@pytest.mark.parametrize("signame,status,says", [("SIGINT", 130, "interrupted:"),
                                                 ("SIGTERM", 143, "terminated (SIGTERM):")])
def test_ctrl_c_or_sigterm_is_one_line_saying_what_is_kept(tmp_path, signame, status, says):
  """Found 2026-12-06 (thirty-fourth session): Ctrl-C in a run printed a KeyboardInterrupt traceback through JAX's
  lowering frames (40 lines), nothing said that the stored records stay or that the command resumes; pressed while
  JAX's gc callback ran, it was dropped ("Exception ignored in _xla_gc_callback") and the run went on to the end.
  A scheduler's SIGTERM ended a run without a word."""
  proc = _program(["experiments/single_step_leakage.py", "--dataset=synthetic_wetlab", "--synthetic_scale=0.2",
                   f"--output_dir={tmp_path / 'out'}"], popen=True)
  seen = []
  for line in proc.stderr:                             # the data are loaded: the gradient stage comes next
    seen.append(line)
    if "updates of N=" in line:
      break
  proc.send_signal(getattr(signal, signame))
  err = "".join(seen) + proc.stderr.read()
  assert proc.wait(timeout=120) == status, err
  assert err.strip().splitlines()[-1] == cli.INTERRUPTED.replace("interrupted:", says) and "Traceback" not in err, err
  assert not (tmp_path / "out").exists()


def test_an_ascii_only_terminal_gets_the_table_with_question_marks(tmp_path):
  # Found 2026-12-06: with PYTHONIOENCODING=ascii the job wrote its results, then failed printing '±' in its table.
  proc = _program(["experiments/single_step_leakage.py", *TINY, "--clients=1,2", f"--output_dir={tmp_path / 'out'}"],
                  PYTHONIOENCODING="ascii")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "% (?" in proc.stdout and "results in" in proc.stdout


def test_a_folder_flag_starting_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
  # Found 2026-12-06: the shell leaves '~' after '=' alone, and `--output_dir=~/res` wrote to ./~/res.
  from jaxleak.runs.study import spec
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  (tmp_path / "cwd").mkdir()
  monkeypatch.chdir(tmp_path / "cwd")
  assert cli.call(SS.main, SS.FLAGS, [*TINY, "--clients=1", "--output_dir=~/res"]) == 0
  assert (tmp_path / "home" / "res" / "summary.csv").exists() and os.listdir(tmp_path / "cwd") == []
  study = spec.override(spec.preset("har_sampling"), {"datasets": "wear", "data_dir": "~/wear"})
  assert {part.data_dir for part in study.parts} == {str(tmp_path / "home" / "wear")}


@pytest.mark.parametrize("platforms", ["cuda", "bogus"])
def test_a_backend_jax_cannot_start_is_one_line(platforms, tmp_path):
  """Found 2026-12-06: JAX_PLATFORMS=cuda on a machine without CUDA ended the main job, after loading its data, in a
  bare AssertionError from JAX's first array (jax 0.10.2); an unknown platform in JAX's RuntimeError traceback."""
  from jaxleak import gpu_numerics
  if platforms == "cuda" and gpu_numerics.gpu_possible({}):
    pytest.skip("this machine may have a CUDA backend")
  for command in (["experiments/single_step_leakage.py", *TINY, f"--output_dir={tmp_path / 'out'}"],
                  ["-m", "jaxleak.study", "run", "har_sampling", "--dry_run"]):
    proc = _program(command, JAX_PLATFORMS=platforms)
    lines = [l for l in proc.stderr.splitlines() if not re.match(r"[IW]\d{4} ", l)]   # absl's progress lines
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: JAX could not start a device backend (JAX_PLATFORMS={platforms}: ")
  assert not (tmp_path / "out").exists()


def test_sizes_too_large_for_memory_are_one_line(tmp_path, capsys):
  """Found 2026-12-04 (sixteenth session): --local_epochs=100000000 ended in "JaxRuntimeError: RESOURCE_EXHAUSTED:
  Out of memory allocating 6788803487152 bytes." and a traceback; NumPy's MemoryError likewise."""
  assert cli.call(EX.main, EX.FLAGS, ["--dataset=digits", "--rounds=1", f"--output_dir={tmp_path}",
                                      "--local_epochs=100000000"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: out of memory (Out of memory allocating") and "lower them" in err
  assert "--chunk_size" not in err                                 # Eavesdrop has no such flag
  fv = cli.flags.FlagValues()

  def numpy_runs_out(argv):
    raise MemoryError("Unable to allocate 3.73 GiB for an array with shape (500000008,) and data type int64")
  assert cli.execute(numpy_runs_out, fv, []) == 2
  assert "error: out of memory (Unable to allocate 3.73 GiB" in capsys.readouterr().err

  har = cli.flags.FlagValues()                                     # a HAR driver's flags: its chunk is a size too
  cli.flags.DEFINE_integer("chunk_size", None, "updates at once", flag_values=har)

  def the_gpu_runs_out(argv):
    raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.")
  assert cli.execute(the_gpu_runs_out, har, []) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: out of memory (Out of memory while") and "or --chunk_size, the updates" in err

  def jaxlib_07_runs_out(argv):                                    # XLA:CPU's words at the lower bound, jaxlib 0.7
    raise RuntimeError("INTERNAL: Buffer Definition Event: Error preparing computation: Out of memory allocating "
                       "6588802177136 bytes.")
  assert cli.execute(jaxlib_07_runs_out, fv, []) == 2
  assert capsys.readouterr().err.startswith("error: out of memory (Out of memory allocating 6588802177136 bytes.)")

  def a_bug(argv):
    raise RuntimeError("something else")
  with pytest.raises(RuntimeError, match="something else"):             # not every RuntimeError is the user's
    cli.execute(a_bug, fv, [])


def test_python_dash_m_jaxleak_lists_the_commands_that_exist(capsys):
  """`python -m jaxleak` (which a user tries first) lists the commands instead of "No module named
  jaxleak.__main__"; every program it names exists."""
  import importlib
  import re
  from jaxleak import __main__ as entry
  assert entry.main(["jaxleak"]) == 0
  listed = re.findall(r"python (experiments/\w+\.py|-m jaxleak\.\w+)", capsys.readouterr().out)
  assert len(listed) == 7
  for program in listed:
    if program.startswith("-m "):
      importlib.import_module(program[3:])
    else:
      assert os.path.isfile(os.path.join(ROOT, program)), program
  assert entry.main(["jaxleak", "run"]) == 2 and "takes no arguments" in capsys.readouterr().err
  for asked in ("--help", "-h", "--helpshort"):                  # what a user types first: the list, not an error
    assert entry.main(["jaxleak", asked]) == 0 and "python -m jaxleak.study list" in capsys.readouterr().out


def test_attack_groups_on_the_command_line_expand_in_place():
  from absl import flags
  fv = flags.FlagValues()
  cli.define_leakage_flags(fv, multi_step=False)
  fv(["prog", "--attacks=gcd,paper,ebi"])
  assert cli.leakage_config(fv).attacks == ("gcd", "llg", "llg_star", "ebi", "llbg", "ilrg")
  fv(["prog", "--attacks=all"])
  assert cli.leakage_config(fv).attacks == A.names()
  fv(["prog", "--attacks=weight", "--nohead_bias"])                     # what a bias-free head leaves
  assert cli.leakage_config(fv).attacks == tuple(n for n in A.names() if A.info(n).signal == "weight")
  fv(["prog", "--attacks=all", "--nohead_bias"])
  with pytest.raises(ValueError, match="--attacks=weight names every attack that reads the weight gradient only"):
    cli.leakage_config(fv)
