"""Detection speed and size, the seed's other requirements: detector parameters and images/s (jitted, batched).

  python benchmarks/detector_speed.py                      # the quick config's detector, 24x24x1
  python benchmarks/detector_speed.py --widths 16,32,64 --shape 64,64,3 --batch 256

Random weights: speed does not depend on the values. Each batch size is compiled once (not timed), then run
--repeats times on the same batch; the median time gives images/s. The last line is the record as JSON.
"""

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from vqdefense_jax.detect import detector


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--widths", default="8,16,32")
  parser.add_argument("--shape", default="24,24,1")
  parser.add_argument("--batch", default="1,64,256,1024")
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  widths = tuple(int(w) for w in args.widths.split(","))
  shape = tuple(int(s) for s in args.shape.split(","))
  model = detector.Detector(widths)
  params = detector.init_params(model, 0, shape)
  prob = jax.jit(lambda p, x: jax.nn.sigmoid(model.apply({"params": p}, x)))
  record = dict(widths=widths, shape=shape, params=detector.num_params(params), device=jax.devices()[0].device_kind,
                backend=jax.default_backend(), jax=jax.__version__, python=platform.python_version(), rows=[])
  print(f"detector widths {widths} on {shape}: {record['params']:,} parameters; {record['device']}")
  for b in (int(v) for v in args.batch.split(",")):
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(b,) + shape).astype(np.float32))
    jax.block_until_ready(prob(params, x))  # compile
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(prob(params, x))
      times.append(time.perf_counter() - t0)
    t = float(np.median(times))
    record["rows"].append(dict(batch=b, median_s=t, images_per_s=b / t))
    print(f"batch {b:>5}: {1e3 * t:8.2f} ms  {b / t:>10,.0f} images/s")
  print(json.dumps(record))


if __name__ == "__main__":
  main()
