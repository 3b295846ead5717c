"""Every command the README, BUILD_NOTES.md and the programs' docstrings show still parses: its program exists,
each flag is one the program defines (with a value of the flag's type, an enum value it allows), and a study's
preset and `--set` fields are ones the study engine knows. Nothing is run; this catches the way documentation rots
(a flag renamed or removed, a preset renamed) without the minutes the commands take.

Fenced shell blocks and docstrings are commands to paste: they are checked whole (positional arguments included).
Inline code in prose is often a fragment (`python -m jaxleak.study run ...`): only its flags are checked there.
"""
import ast
import contextlib
import functools
import importlib
import pathlib
import re
import runpy
import shlex
import sys

import pytest
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ("README.md", "BUILD_NOTES.md")
PROGRAMS = sorted([*ROOT.glob("experiments/*.py"), *ROOT.glob("benchmarks/*.py"), ROOT / "jaxleak" / "study.py",
                   ROOT / "jaxleak" / "report.py"])
CMD = re.compile(r"\bpython3? +(-m +jaxleak(?:\.\w+)?|(?:experiments|benchmarks)/\w+\.py)(.*)$")
PLACEHOLDER = "\x00"
#: Values that stand for "a value of your choice" in prose: --model=M, --path=P, --dataset=..., --other=<a folder>.
PLACEHOLDER_VALUE = re.compile(r"^(?:[A-Z]|\.\.\.|\x00.*)$")
#: absl's own flags, which every program takes (--help and friends end the program before anything runs).
ABSL_FLAGS = {"help", "helpshort", "helpfull", "helpxml", "flagfile", "undefok", "logtostderr", "alsologtostderr",
              "verbosity", "v", "log_dir", "only_check_args", "compilation_cache", "gpu_determinism"}


def code_pieces(text: str):
  """(kind, text) of a Markdown document: 'block' for a fenced shell block (line continuations joined), 'span' for
  inline code of the prose (joined onto one line)."""
  out, prose, block, lang = [], [], None, None
  for line in text.splitlines():
    if line.lstrip().startswith("```"):
      if block is None:
        block, lang = [], line.strip()[3:].strip()
      else:
        if lang in ("", "bash", "sh", "shell", "console"):
          out.append(("block", "\n".join(block).replace("\\\n", " ")))
        block = None
      continue
    (block if block is not None else prose).append(line)
  out += [("span", " ".join(s.split())) for s in re.findall(r"`([^`]+)`", "\n".join(prose))]
  return out


def documented_commands():
  """(doc, kind, program, argument words) of every `python <program> ...` command in the docs and in the programs'
  own docstrings."""
  found = []
  pieces = [(doc, piece) for doc in DOCS for piece in code_pieces((ROOT / doc).read_text())]
  for path in PROGRAMS:                               # a program's docstring shows how to run it: whole commands
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    pieces.append((str(path.relative_to(ROOT)), ("block", doc.replace("\\\n", " "))))
  for doc, (kind, piece) in pieces:
    loops = dict(re.findall(r"\bfor (\w+) in (\S+)", piece))      # a shell loop's variable: its first value
    for line in piece.splitlines():
      for seg in re.split(r"&&|;|\|\|?", line):
        m = CMD.search(seg)
        if m:
          found.append((doc, kind, " ".join(m.group(1).split()), _words(m.group(2), loops)))
  return found


def _words(rest: str, loops: dict) -> list:
  """The arguments, shell-split with comments dropped; placeholders made concrete: a loop's $var -> its first
  value, any other $VAR -> 1, {a,b} -> a, and [optional] brackets removed. Fragments' `...` and <placeholders>
  are dropped as words; a flag whose value is one is checked by name only."""
  rest = re.sub(r"\$\{?(\w+)\}?", lambda m: loops.get(m.group(1), "1"), rest)
  rest = re.sub(r"<[^<>]*>", PLACEHOLDER, rest)
  rest = re.sub(r"\{([^,{}]+),[^{}]*\}", r"\1", rest)
  try:
    words = shlex.split(rest, comments=True)
  except ValueError:                                    # an unbalanced quote in a fragment: words as written
    words = rest.split()
  words = [w.strip("[]") for w in words]
  return [w for w in words if w and w not in ("...", PLACEHOLDER)]


@contextlib.contextmanager
def _defines_into(fv: flags.FlagValues):
  """absl's DEFINE_* functions (and flags.FLAGS) writing into `fv` while a benchmark script is loaded: benchmarks
  define their flags in the global FlagValues, where two scripts' flags of the same name would collide."""
  names = [n for n in dir(flags) if n.startswith("DEFINE") or n in ("mark_flag_as_required", "FLAGS")]
  saved = {n: getattr(flags, n) for n in names}
  try:
    for n in names:
      if n == "FLAGS":
        flags.FLAGS = fv
      else:
        setattr(flags, n, functools.partial(saved[n], flag_values=fv))
    yield
  finally:
    for n, f in saved.items():
      setattr(flags, n, f)


@functools.lru_cache(maxsize=None)
def program_flags(program: str) -> flags.FlagValues:
  """The flags `program` defines, in a FlagValues of their own (plus --compilation_cache, which every program
  takes)."""
  fv = flags.FlagValues()
  if program in ("-m jaxleak", "-m jaxleak.data"):    # they list the commands or datasets; they have no flags
    return fv
  if program.startswith("-m "):
    module = importlib.import_module(program[3:])
    fv.append_flag_values(module.FLAGS)
  elif program.startswith("experiments/"):
    module = importlib.import_module("experiments." + pathlib.Path(program).stem)
    fv.append_flag_values(module.FLAGS)
  else:
    bench = str(ROOT / "benchmarks")

    def script_modules():                             # modules loaded from benchmarks/ (_flags, flops, main_job...)
      return {k for k, m in list(sys.modules.items()) if str(getattr(m, "__file__", None) or "").startswith(bench)}

    before = script_modules()
    saved = {k: sys.modules.pop(k) for k in before}    # a script's sibling imports define their flags again, here
    sys.path.insert(0, bench)
    try:
      with _defines_into(fv):
        runpy.run_path(str(ROOT / program), run_name="documented_command_check")
    finally:
      sys.path.remove(bench)
      for k in script_modules():                      # bound to this FlagValues: no other test may import them
        sys.modules.pop(k, None)
      sys.modules.update(saved)
  return fv


def _check_flags(program: str, words: list, *, whole: bool) -> tuple:
  """Parses `words` with the program's flags; returns (positional arguments, --set values). Raises AssertionError
  on a flag the program does not define or a value the flag cannot take."""
  fv = program_flags(program)
  known = set(fv) | ABSL_FLAGS
  for w in words:
    if not w.startswith("-"):
      continue
    name = w.lstrip("-").split("=")[0]
    if name not in known and not (name.startswith("no") and name[2:] in known):
      raise AssertionError(f"{program} has no flag --{name} (it defines: {', '.join(sorted(fv))})")
  # absl's own flags (--help ends the program; --compilation_cache is added by jaxleak.cli) are not parsed; a
  # placeholder value is replaced by a word when the flag takes any text (a required --other=<folder>), else left out.
  own = []
  for w in words:
    name, _, value = w.lstrip("-").partition("=")
    if w.startswith("-") and name in ABSL_FLAGS - {"flagfile"}:
      continue
    if w.startswith("-") and PLACEHOLDER_VALUE.match(value):
      try:
        w = f"--{name}={fv[name].parser.parse('placeholder')}"
      except (ValueError, TypeError, KeyError):
        continue
    own.append(w)
  try:
    args = fv(["prog", *own])[1:]
    return args, list(fv["set"].value or []) if "set" in fv else []
  except flags.Error as e:
    raise AssertionError(f"{program} {' '.join(words)}: {e}") from None
  finally:
    fv.unparse_flags()


def _check_positionals(program: str, args: list, sets: list) -> None:
  if program == "-m jaxleak.study":
    from jaxleak import study as cmd
    from jaxleak.runs import study as S
    assert args and args[0] in cmd.COMMANDS, f"study command {args[:1]}: one of {cmd.COMMANDS}"
    if args[0] == "run":
      assert len(args) == 2 and args[1] in S.PRESETS, f"study preset {args[1:]}: one of {sorted(S.PRESETS)}"
      S.override(S.preset(args[1]), cmd._overrides(sets))
    else:
      assert len(args) == 1, f"{args[0]} takes no arguments, got {args[1:]}"
  elif program == "benchmarks/study.py":
    assert len(args) <= 1, args
    if args and args[0] == "grid":
      from jaxleak import study as cmd
      from jaxleak.runs import study as S
      S.override(S.preset("har_paper"), cmd._overrides(sets))
  elif program in ("-m jaxleak", "-m jaxleak.data"):
    entry = importlib.import_module(program[3:] + ".__main__")
    assert entry.main([program[3:], *args]) == 0, f"python {program} takes no arguments, got {args}"
  elif program not in ("-m jaxleak.report", "benchmarks/qi_readings.py"):   # these take folders
    assert not args, f"{program} takes no positional arguments, got {args}"


COMMANDS = documented_commands()


def test_the_docs_show_commands():
  kinds = {(doc, kind) for doc, kind, _, _ in COMMANDS}
  assert {("README.md", "block"), ("BUILD_NOTES.md", "block"), ("BUILD_NOTES.md", "span")} <= kinds
  assert len(COMMANDS) >= 100


@pytest.mark.parametrize("doc, kind, program, words", COMMANDS,
                         ids=[f"{d}:{p}:{' '.join(w)[:60]}" for d, _, p, w in COMMANDS])
def test_documented_command_parses(doc, kind, program, words, monkeypatch):
  monkeypatch.chdir(ROOT)                                   # --flagfile=experiments/presets/... as in the docs
  if program.startswith("benchmarks/reference_way"):
    pytest.importorskip("torch")
  assert program.startswith("-m ") or (ROOT / program).is_file(), f"{doc}: {program} does not exist"
  args, sets = _check_flags(program, words, whole=kind == "block")
  if kind == "block":
    _check_positionals(program, args, sets)


def test_a_renamed_flag_a_bad_value_and_an_unknown_preset_are_caught():
  """The check itself can fail."""
  with pytest.raises(AssertionError, match="has no flag --num_sample"):
    _check_flags("experiments/single_step_leakage.py", ["--num_sample=5"], whole=True)
  with pytest.raises(AssertionError, match="sampling"):
    _check_flags("experiments/single_step_leakage.py", ["--sampling=random"], whole=True)
  with pytest.raises(AssertionError, match="has no flag --size"):
    _check_flags("benchmarks/main_job.py", ["--size=2"], whole=True)
  with pytest.raises(AssertionError, match="study preset"):
    _check_positionals("-m jaxleak.study", ["run", "har_everything"], [])
  with pytest.raises(ValueError, match="datasetz"):
    _check_positionals("-m jaxleak.study", ["run", "har_ldp"], ["datasetz=hapt"])


def test_benchmark_flags_are_read_into_their_own_flag_values_and_leave_nothing_behind():
  before = set(flags.FLAGS)
  main_job = program_flags("benchmarks/main_job.py")
  assert "repeats" in main_job and "other" not in main_job
  assert "other" in program_flags("benchmarks/main_job_ab.py")
  assert set(flags.FLAGS) == before and not [k for k in sys.modules if k in ("_flags", "flops")]
