"""Run a paper's whole experiment grid as one resumable, shardable command.

  python -m jaxleak.study list                                            # the presets
  python -m jaxleak.study run har_sampling --dry_run                      # the plan, no work
  python -m jaxleak.study run har_sampling --study_dir=studies/sampling --dry_run     # ... and what is done
  python -m jaxleak.study run har_sampling --study_dir=studies/sampling \\
      --set datasets=synthetic_wear,synthetic_wetlab --set states=untrained            # any sub-grid
  python -m jaxleak.study run har_ldp --study_dir=studies/ldp --task_index=3 --num_tasks=8   # shard 3 of 8
  python -m jaxleak.study status --study_dir=studies/ldp
  python -m jaxleak.study collect --study_dir=studies/ldp                # tables/results.csv, summary.csv
  python -m jaxleak.study collect --study_dir=/shared/ldp --tables_dir=~/ldp_tables    # a study you cannot write to

A killed run continues where it stopped when the same command is run again (finished tasks are records; they are
verified and skipped). Shards write into the same study folder (or folders that `collect` reads one by one).
`status` and `collect` read the study stored in --study_dir (every shard's records) and take no other flag but
`collect`'s --tables_dir.
"""

import math

from absl import flags

from jaxleak import cli

FLAGS = flags.FlagValues()
_d = dict(flag_values=FLAGS)
flags.DEFINE_string("study_dir", None, "The study's folder (records, index, tables); a --dry_run without it "
                    "shows the plan as if nothing were done yet.", **_d)
flags.DEFINE_multi_string("set", [], "field=value overriding a field of the study, e.g. --set models=tinyhar "
                          "--set ldp=0:0,0.1:1.0 --set multi_step=100:20:5 (repeatable); an LDP sweep as the product "
                          "of two lists: --set ldp_sigmas=0,geom:1e-3:1:9 --set ldp_taus=0,lin:0.5:1.5:3", **_d)
flags.DEFINE_bool("dry_run", False, "Print the plan (groups, tasks, what is done) and exit.", **_d)
flags.DEFINE_integer("task_index", 0, "This shard's index in [0, --num_tasks) (e.g. $SLURM_ARRAY_TASK_ID).", **_d)
flags.DEFINE_integer("num_tasks", 1, "Number of shards the study's groups are dealt to.", **_d)
flags.DEFINE_enum("executor", "local", ["local", "ray"], "Run groups here, or one Ray task per group.", **_d)
flags.DEFINE_bool("wait", False, "After the groups nobody else holds, wait for the ones other processes sharing "
                  "the folder are running, and run what they leave undone: return only when every task is stored.",
                  **_d)
flags.DEFINE_integer("chunk_size", None, "HAR updates vmapped together (memory vs speed; default as the drivers': on "
                     "CPU 8, or 1 for a full backward pass; on a GPU or TPU about 6,400 windows' worth, 8 to 256). "
                     "Lower it if a group runs out of memory; how records are computed, not part of their keys.",
                     **_d)
flags.DEFINE_string("ray_address", None, "Ray cluster address for --executor=ray: host:port, ray://host:port or "
                    "auto (default, as Ray's own: the cluster in $RAY_ADDRESS, else one `ray start` began on this "
                    "machine, else a new local one for this run).", **_d)
flags.DEFINE_float("ray_gpus_per_task", None, "GPUs each Ray task (one group) asks for (default: 1 where the cluster "
                   "has GPUs, else 0; a fraction such as 0.5 shares a GPU between groups). Ray hides the GPUs from "
                   "a task that asks for none.", **_d)

flags.DEFINE_string("tables_dir", None, "collect: the folder its tables are written to, whole (default "
                    "<study_dir>/tables); for a study you may read but not write.", **_d)

cli.define_distributed_flags(FLAGS)

COMMANDS = ("run", "status", "collect", "list")

#: Flags only `run` reads (`status` and `collect` read the stored study, whole).
RUN_ONLY_FLAGS = ("set", "dry_run", "task_index", "num_tasks", "executor", "ray_address", "ray_gpus_per_task",
                  "wait", "chunk_size", "distributed", "coordinator_address", "num_processes", "process_id",
                  "distributed_timeout")


def main(argv):
  from jaxleak.runs import study as S
  from jaxleak.runs.study import collect
  args = argv[1:]
  if not args or args[0] not in COMMANDS:
    raise cli.FlagError(f"give a command: {', '.join(COMMANDS)} (e.g. python -m jaxleak.study run har_sampling "
                        "--study_dir=studies/sampling).")
  command, rest = args[0], args[1:]
  if FLAGS["tables_dir"].present and command != "collect":
    raise cli.FlagError(f"--tables_dir: read only by `collect` (where it writes the tables); {command} does not "
                        "write them: drop it.")
  if command != "run":
    given = [f"--{n}" for n in RUN_ONLY_FLAGS + (("study_dir",) if command == "list" else ()) if FLAGS[n].present]
    if given:                                      # they would be ignored, and look applied
      raise cli.FlagError(f"{', '.join(given)}: " + (
          "list takes none (it lists the presets): drop them." if command == "list" else
          f"read only by `run`; {command} reads the study stored in --study_dir (every shard's records): drop them."))
    if rest and command == "list":
      raise cli.FlagError("list takes no arguments.")
  if command == "list":
    width = max(map(len, S.PRESETS))
    for name, st in sorted(S.PRESETS.items()):
      print(f"{name:{width}s}  {st.summary}")
    return
  if command == "run" and len(rest) == 1:
    S.preset(rest[0])                              # a misspelt study is named first, before a missing --study_dir
  if not FLAGS.study_dir and not (command == "run" and FLAGS.dry_run):
    raise cli.FlagError("--study_dir is required: the folder that holds the study's records.")
  if command == "run":
    if len(rest) != 1:
      raise cli.FlagError(f"run takes one study name; presets: {', '.join(sorted(S.PRESETS))}.")
    for name in ("ray_address", "ray_gpus_per_task"):
      if FLAGS[name].value is not None and FLAGS.executor != "ray":
        raise cli.FlagError(f"--{name} is only used with --executor=ray.")
    if FLAGS.wait and (FLAGS.executor == "ray" or FLAGS.distributed):
      other = "--executor=ray" if FLAGS.executor == "ray" else "--distributed"
      raise cli.FlagError("--wait is for the local executor of one process (groups shared with other commands "
                          f"through the folder); drop it or {other}.")
    if FLAGS.distributed and FLAGS.executor == "ray":
      raise cli.FlagError("--distributed and --executor=ray: choose one. Ray runs whole groups on its workers, which "
                          "are not JAX processes of the distributed run; --distributed has every process compute a "
                          "share of each group's updates.")
    cli.check_distributed_flags(FLAGS)
    cli.positive_int(FLAGS, "num_tasks")
    if FLAGS.chunk_size is not None:
      cli.positive_int(FLAGS, "chunk_size")
    cli.check(FLAGS, "task_index", 0 <= FLAGS.task_index < FLAGS.num_tasks, f"in [0, {FLAGS.num_tasks})")
    study = S.override(S.preset(rest[0]), _overrides(FLAGS.set))
    plan = S.make_plan(study, check_inputs=not FLAGS.dry_run)
    if FLAGS.chunk_size is not None and not any(g.kind == "har" for g in plan.groups):
      raise cli.FlagError(f"--chunk_size: read only by HAR groups, and {rest[0]} has none (Eavesdrop runs vmap "
                          "their participants whole); drop it.")
    shard = plan.shard(FLAGS.task_index, FLAGS.num_tasks)
    if FLAGS.dry_run:
      from jaxleak.runs.study.cost import describe_dry_run
      from jaxleak.runs.study.plan import check_checkpoints, check_client_sizes, check_eavesdrop_data
      loaded: dict = {}                            # datasets read once, for all checks and the costs
      check_client_sizes(plan, loaded)             # an impossible N is refused by a dry run too
      check_eavesdrop_data(plan, loaded)
      done = (S.Store(FLAGS.study_dir).done_keys(t.key for t in shard.tasks)
              if FLAGS.study_dir and _exists(FLAGS.study_dir) else set())
      print(describe_dry_run(shard, done, loaded))
      try:                                         # the plan is still shown; what a run would refuse, said after it
        check_checkpoints(plan, loaded)
      except (FileNotFoundError, ValueError) as e:
        print(f"note: a run would stop here: {e}")
      return
    cli.writable(FLAGS.study_dir, "study_dir")
    if FLAGS.executor == "ray":                    # before study.json is written: a wrong address is one line
      from jaxleak.runs.study import executors
      executors.require_ray()
      executors.gpus_per_task(FLAGS.ray_gpus_per_task, [math.inf])   # what no cluster could give: before any work
      executors.check_address(FLAGS.ray_address)
    writer = cli.init_distributed(FLAGS, argv)
    store = S.Store(FLAGS.study_dir, read_only=not writer)
    S.adopt_folder(plan, store, write=writer, progress=print)
    if FLAGS.executor == "ray":
      try:
        executors.run_with_ray(shard, store, address=FLAGS.ray_address, progress=cli.progress,
                               chunk_size=FLAGS.chunk_size, gpus=FLAGS.ray_gpus_per_task)
      except executors.GroupsFailed as e:
        raise cli.Stopped(str(e)) from None
    else:
      S.run_plan(shard, store, progress=print, wait=FLAGS.wait, chunk_size=FLAGS.chunk_size)
    return
  if rest:
    raise cli.FlagError(f"{command} takes no arguments besides --study_dir.")
  if command == "collect" and FLAGS.tables_dir is not None:
    _check_tables_dir(FLAGS.tables_dir, FLAGS.study_dir)
  store = S.Store(FLAGS.study_dir)
  plan = store.read_plan()
  if command == "status":
    print(S.status(plan, store))
  else:
    out, missing = collect.collect(plan, store, FLAGS.tables_dir)
    print(f"tables in {out}/" + (f" ({missing} tasks have no record yet)" if missing else ""))


def _overrides(items) -> dict:
  out = {}
  for item in items:
    if "=" not in item:
      raise cli.FlagError(f"--set {item!r}: expected field=value.")
    k, v = item.split("=", 1)
    if k.strip() in out:
      raise cli.FlagError(f"--set {k.strip()} given twice.")
    out[k.strip()] = v
  return out


def _check_tables_dir(tables_dir: str, study_dir: str) -> None:
  """Refuses a --tables_dir that is, holds or lies inside the study folder (its own tables/ aside), or that cannot
  be written, before the records are read."""
  import os
  if not tables_dir.strip():
    raise cli.FlagError("--tables_dir is empty: name the folder the tables go to (or leave the flag out for "
                        f"{os.path.join(study_dir, 'tables')}).")
  tables, study = os.path.realpath(tables_dir), os.path.realpath(study_dir)
  if tables != os.path.join(study, "tables") and (
      tables == study or tables.startswith(study + os.sep) or study.startswith(tables + os.sep)):
    raise cli.FlagError(f"--tables_dir={tables_dir}: " + (
        "is the study folder" if tables == study else "lies inside the study folder" if tables.startswith(study)
        else "holds the study folder") + "; the tables are a folder of their own, written whole: name one outside "
        f"it (or leave --tables_dir out for {os.path.join(study_dir, 'tables')}).")
  cli.writable(tables_dir, "tables_dir")


def _exists(path) -> bool:
  import os
  return os.path.isdir(path)


if __name__ == "__main__":
  cli.run(main, FLAGS)
