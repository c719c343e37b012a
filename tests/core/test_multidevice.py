"""Past one device: the grid, the sweep training and data-parallel training give the same results on 4 (CPU)
devices as on one."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_four_devices_give_the_same_results_as_one(data_dir, tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, os.path.join(HERE, "multidevice_check.py"), data_dir, str(tmp_path)],
                     env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  res = json.loads(p.stdout.strip().splitlines()[-1])
  assert res["device_count"] == 4
  # Sweep training: four codebook sizes split over four devices, against the same stack on one device.
  assert res["train_max_abs_diff"] < 1e-5
  # Data-parallel training: each batch of 16 split over 4 devices, against one device (float32 sums reordered).
  assert res["data_parallel_devices"] == [1, 4] and res["data_parallel_max_abs_diff"] < 1e-5
  one = res["grid"]["1x1"]
  for mesh, r in res["grid"].items():
    np.testing.assert_allclose(r["undefended"], one["undefended"], atol=1e-12, err_msg=mesh)
    np.testing.assert_allclose(r["accuracy"], one["accuracy"], atol=1e-12, err_msg=mesh)
    for key in ("clean", "pred_undefended", "predictions"):  # per image, in test-set order, whatever the mesh
      np.testing.assert_array_equal(r[key], one[key], err_msg=f"{mesh} {key}")
    # The counts (the authors' rule here) are what the per-image predictions give.
    y, ok = np.asarray(r["labels"]), np.asarray(r["clean"]) == np.asarray(r["labels"])
    np.testing.assert_allclose(np.mean((np.asarray(r["predictions"]) == y) & ok, axis=-1), r["accuracy"], atol=1e-12)
    np.testing.assert_allclose(np.mean((np.asarray(r["pred_undefended"]) == y) & ok, axis=-1), r["undefended"],
                               atol=1e-12)
  # (models, fgsm + ste_pgd + their worst case, purifiers, ε)
  assert res["grid"]["1x4"]["chunk"] == 16 and np.asarray(one["accuracy"]).shape == (4, 3, 4, 3)
