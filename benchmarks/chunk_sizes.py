"""How many updates to vmap together (`LeakageConfig.chunk_size`), per path, side by side in one process.

  python benchmarks/chunk_sizes.py --model=tinyhar --path=multi            # HAPT, local training N:B:S = 100:50:2
  python benchmarks/chunk_sizes.py --model=deepconvlstm --path=multi
  python benchmarks/chunk_sizes.py --dataset=synthetic_wear --synthetic_scale=0.2 --model=tinyhar --path=norms
  python benchmarks/chunk_sizes.py --path=single                           # the forward-only single step

Paths: single (forward + closed-form head gradient), multi (local SGD steps), norms (head gradient and
whole-model gradient norm: the shared pass of an LDP sweep, a full backward). Each chunk size is timed after a
compiling run, in the order given (repeat one to see the noise). Prints seconds and windows/s per chunk size.
"""
import dataclasses
import time

import jax
import _flags
from absl import flags

from jaxleak.federated import LocalSteps
from jaxleak.runs.leakage import LeakageConfig
from jaxleak.runs.leakage.prepare import prepare
from jaxleak.runs.leakage.updates import compute_heads_and_norms, compute_updates

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "hapt", "HAR dataset.")
flags.DEFINE_float("synthetic_scale", 1.0, "Size of a synthetic dataset.")
flags.DEFINE_string("model", "tinyhar", "HAR model.")
flags.DEFINE_enum("path", "multi", ["single", "multi", "norms"], "Which computation (see the docstring).")
flags.DEFINE_list("chunks", ["8", "1", "2", "8", "1"], "Chunk sizes, timed in this order.")


def main(_):
  chunks = _flags.numbers("chunks")
  base = LeakageConfig(dataset=FLAGS.dataset, synthetic_scale=FLAGS.synthetic_scale, model=FLAGS.model,
                       local=LocalSteps(batch_size=50, steps=2) if FLAGS.path == "multi" else None)
  prep = prepare(base, None, None, None)
  k, n = prep.indices.shape
  print(f"{FLAGS.dataset} | {FLAGS.model} | {FLAGS.path} | {k} updates of {n} windows | {jax.default_backend()}")
  for chunk in chunks:
    cfg = dataclasses.replace(base, chunk_size=chunk)
    run = ((lambda: compute_heads_and_norms(prep, cfg, None)) if FLAGS.path == "norms"
           else (lambda: compute_updates(prep, cfg, cfg.ldp, None)))
    jax.block_until_ready(run())                                        # compiles
    t = time.perf_counter()
    jax.block_until_ready(run())
    dt = time.perf_counter() - t
    print(f"  chunk {chunk:3d}: {dt:7.2f} s  {k * n / dt:9,.0f} windows/s", flush=True)


if __name__ == "__main__":
  _flags.run(main)
