"""Several processes for real: two processes on this machine (JAX's distributed runtime, gloo CPU collectives,
two CPU devices each) train and run the grid like one process does, restore each other's checkpoints, and all
stop within parallel.timeout_s, with one line naming the culprit, when one fails or is killed. A detection and a
restoration run, data-parallel over both processes' devices, match the same run on one device.

The launch is the one README.md documents (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from support import free_port, tiny, write_tiny_config_file
from vqdefense_jax.core import checkpoints, coordinator, parallel
from vqdefense_jax.core.errors import VQDefenseError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 10  # parallel.timeout_s in these runs


def _env(devices: int = 2, **extra) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                                                           "JAX_PROCESS_ID")}
  return dict(env, JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)


def _launch(script: str, args: list[str], per_process: tuple[list[str], list[str]] = ([], []),
            timeout_s: int = TIMEOUT_S):
  """Two processes of `script` (train.py or evaluate.py) joined in one run; returns their Popen objects (the
  port is `procs[0].port`)."""
  port = free_port()
  procs = [subprocess.Popen([sys.executable, script, *args, "--config.parallel.distributed=true",
                            f"--config.parallel.timeout_s={timeout_s}", *per_process[i]], cwd=ROOT,
                           env=_env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                    JAX_PROCESS_ID=str(i)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  procs[0].port = port
  return procs


def _service_helpers(port: int) -> list[int]:
  """The pids of the coordination-service helpers (core/coordinator.py) serving this port."""
  pids = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        args = f.read().split(b"\0")
    except OSError:  # it ended meanwhile
      continue
    if any(b"coordinator.main" in a for a in args) and f"[::]:{port}".encode() in args:
      pids.append(int(pid))
  return pids


def _wait_helper_gone(port: int, within_s: float) -> None:
  deadline = time.monotonic() + within_s
  while _service_helpers(port):
    assert time.monotonic() < deadline, f"the coordination-service helper outlived the run by {within_s} s"
    time.sleep(0.2)


def _wait(procs, limit_s: float = 240):
  """Each process's (status, stdout, stderr). Past `limit_s`, every process still running prints all its
  threads' stacks (SIGUSR1: core/distributed.py) and is killed, and the test fails with them."""
  deadline, out = time.monotonic() + limit_s, []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
      out.append((p.returncode, stdout, stderr))
    return out
  except subprocess.TimeoutExpired:
    running = procs[len(out):]
    for p in running:
      if p.poll() is None:
        p.send_signal(signal.SIGUSR1)
    time.sleep(3)
    for p in running:
      p.kill()
    stacks = [f"process {i}:\n" + (err if p not in running else p.communicate()[1])[-6000:]
              for i, (p, err) in enumerate(zip(procs, [e for _, _, e in out] + [""] * len(running)))]
    raise AssertionError(f"the processes did not finish within {limit_s} s; their stacks:\n" + "\n".join(stacks))


def _two(script: str, args: list[str], **kw):
  """Both processes' (status, stdout without gloo's connection lines, stderr), after checking they succeeded
  and that the coordination service's helper process ended with them."""
  procs = _launch(script, args, **kw)
  results = [(code, "".join(line for line in out.splitlines(True) if not line.startswith("[Gloo]")), err)
             for code, out, err in _wait(procs)]
  for i, (code, _, stderr) in enumerate(results):
    assert code == 0, f"process {i}: {stderr[-3000:]}"
  _wait_helper_gone(procs[0].port, coordinator.LINGER_S + 5)
  return results


def _one(script: str, args: list[str], devices: int = 2):
  p = subprocess.run([sys.executable, script, *args], cwd=ROOT, env=_env(devices), capture_output=True, text=True,
                     timeout=240)
  assert p.returncode == 0, p.stderr[-3000:]
  return p


def _states(workdir: str) -> dict:
  out = {}
  for name in sorted(os.listdir(os.path.join(workdir, "checkpoints"))):
    with checkpoints.quiet():
      mngr = checkpoints.reader(os.path.join(workdir, "checkpoints", name))
      out[name] = (mngr.latest_step(), mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore()))
      mngr.close()
  return out


def _grid(workdir: str) -> dict:
  with open(os.path.join(workdir, "grid.json")) as f:
    g = json.load(f)
  return {k: np.asarray(g[k]) for k in ("accuracy", "undefended")}


@pytest.mark.slow
def test_two_processes_train_and_evaluate_as_one_and_restore_each_others_checkpoints(tiny_config_file, tmp_path):
  cfg = ["--config", tiny_config_file]
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  _one("train.py", cfg + ["--workdir", one])
  results = _two("train.py", cfg + ["--workdir", two])
  # Only process 0 reports (and writes: its metrics.jsonl holds each row once, like one process's).
  assert "trained" in results[0][1] and "trained" not in results[1][1]
  assert "step/s" not in results[1][2] and " INFO vqdefense_jax" not in results[1][2]
  with open(os.path.join(one, "metrics.jsonl")) as f1, open(os.path.join(two, "metrics.jsonl")) as f2:
    rows1, rows2 = f1.read().splitlines(), f2.read().splitlines()
  assert len(rows2) == len(set(rows2)) == len(rows1)
  # The sweep's stack was split over both processes' devices; its checkpoints are complete and the same.
  s1, s2 = _states(one), _states(two)
  assert s1.keys() == s2.keys() and any("sweep" in name for name in s2)
  for name in s1:
    assert s1[name][0] == s2[name][0], name
    for a, b in zip(jax.tree.leaves(s1[name][1]), jax.tree.leaves(s2[name][1])):
      np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=1e-5, err_msg=name)

  # Restore across topologies: checkpoints one process wrote, evaluated by two, and the other way round.
  one_by_two, two_by_one = str(tmp_path / "one_by_two"), str(tmp_path / "two_by_one")
  shutil.copytree(one, one_by_two)
  shutil.copytree(two, two_by_one)
  results = _two("evaluate.py", ["--grid"] + cfg + ["--workdir", one_by_two])
  assert "wrote grid.json" in results[0][1] and "wrote" not in results[1][1] and "accuracy" not in results[1][1]
  _one("evaluate.py", ["--grid"] + cfg + ["--workdir", one])
  _one("evaluate.py", ["--grid"] + cfg + ["--workdir", two_by_one])
  reference = _grid(one)
  for workdir in (one_by_two, two_by_one):
    for key, value in _grid(workdir).items():
      np.testing.assert_array_equal(value, reference[key], err_msg=f"{workdir} {key}")


# The detection run without the purification models (no FID, no attacks, no gate): its ALAE, DCGAN and two
# detectors (p = 0 and p = 0.5, whose augmentation runs on the host) are what runs data-parallel. The restoration
# run: its classifier and one restorer.
SMALL = dict(detect=["--config.eval.fid=false", "--config.eval.sources=alae_samples,alae_reconstructions,dcgan_samples",
                     "--config.gate.detector=none", "--config.gate.grid=false"],
             restore=["--config.variants=cbam"])
RESULT = dict(detect="detection.json", restore="restoration.json")
# Split over 4 devices, each float32 sum over a batch runs in another order (4 partial sums, then gloo's
# all-reduce): a few ulps (float32's is 1.2e-7) per sum, and 4 to 8 Adam steps barely grow that. Measured
# (2026-12-08): final losses differed by at most 7e-7 relatively, PSNR, SSIM and Grad-CAM numbers by at most
# 5e-7, and every AP and accuracy was equal. Both runs are deterministic, so a result within this bound stays so.
RTOL, ATOL = 1e-5, 1e-6
SLOW_MACHINE_TIMEOUT_S = 60  # these runs test results, not failure: a loaded CPU must not end them (heartbeats)


def _final_losses(workdir: str) -> dict[str, dict[str, float]]:
  """Every model's last metrics row (its final losses), without the model and step."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["model"]: {k: v for k, v in r.items() if k not in ("model", "step")} for r in rows}


def _numbers(tree, path: str = "") -> dict[str, float]:
  """Every number of a result's json (its config left out), by path ('/ap/none/alae_samples')."""
  if isinstance(tree, dict):
    return {k: v for key, value in tree.items() if key != "config" for k, v in _numbers(value, f"{path}/{key}").items()}
  if isinstance(tree, list):
    return {k: v for i, value in enumerate(tree) for k, v in _numbers(value, f"{path}/{i}").items()}
  return {path: float(tree)} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}


@pytest.mark.slow
@pytest.mark.parametrize("system", ["detect", "restore"])
def test_detection_and_restoration_train_data_parallel_on_two_processes_as_on_one_device(data_dir, tmp_path, system):
  cfg = ["--config", write_tiny_config_file(tmp_path / f"tiny_{system}.py", data_dir, f"tiny_{system}"), *SMALL[system]]
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  _one("evaluate.py", ["--grid", *cfg, "--workdir", one], devices=1)
  # One launch of 2 processes trains (every batch split over their 4 devices) and evaluates: one start-up and
  # one set of compilations instead of two (train.py's path is the same `train_all`; tests/purify covers it alone).
  evaluated = _two("evaluate.py", ["--grid", *cfg, "--workdir", two], timeout_s=SLOW_MACHINE_TIMEOUT_S)
  assert f"wrote {RESULT[system]}" in evaluated[0][1] and "wrote" not in evaluated[1][1]
  with open(os.path.join(one, "metrics.jsonl")) as f1, open(os.path.join(two, "metrics.jsonl")) as f2:
    rows1, rows2 = f1.read().splitlines(), f2.read().splitlines()
  assert len(rows2) == len(set(rows2)) == len(rows1)  # process 0 wrote each row once
  losses1, losses2 = _final_losses(one), _final_losses(two)
  assert losses1.keys() == losses2.keys()
  for model, row in losses1.items():
    np.testing.assert_allclose([losses2[model][k] for k in row], list(row.values()), rtol=RTOL, atol=ATOL,
                               err_msg=f"{model} {list(row)}")
  with open(os.path.join(one, RESULT[system])) as f1, open(os.path.join(two, RESULT[system])) as f2:
    numbers1, numbers2 = _numbers(json.load(f1)), _numbers(json.load(f2))
  assert numbers1.keys() == numbers2.keys() and numbers1
  np.testing.assert_allclose([numbers2[k] for k in numbers1], list(numbers1.values()), rtol=RTOL, atol=ATOL,
                             err_msg=" ".join(numbers1))


def _one_error_line(stderr: str) -> str:
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1, stderr[-3000:]
  noise = ("coordination_service", "Check failure", "Terminating process", "Barrier", "Traceback")
  assert not any(word in stderr for word in noise), stderr[-3000:]  # no pages of runtime output
  return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("bad", [0, 1])
def test_bad_input_on_one_process_stops_both_with_one_line(tiny_config_file, tmp_path, bad):
  start = time.monotonic()
  per_process = ([], [])
  per_process[bad].append(f"--config.data.cache_dir={tmp_path / 'nothing here'}")
  procs = _launch("train.py", ["--config", tiny_config_file, "--workdir", str(tmp_path / "w")], per_process)
  results = _wait(procs)
  assert time.monotonic() - start < 60
  assert [code for code, _, _ in results] == [2, 2]
  good = 1 - bad
  assert f"process {bad} failed" in _one_error_line(results[good][2])
  assert f"process {bad} failed" not in _one_error_line(results[bad][2])  # its own error
  _wait_helper_gone(procs[0].port, TIMEOUT_S + coordinator.GRACE_S + 5)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])  # 0 started the coordination service (in a helper process)
def test_a_killed_process_stops_the_other_within_the_timeout(tiny_config_file, tmp_path, victim):
  # Long enough to be killed mid-run: the classifier trains for many steps.
  procs = _launch("train.py", ["--config", tiny_config_file, "--workdir", str(tmp_path / "w"),
                               "--config.classifier.steps=100000"])
  deadline = time.monotonic() + 120
  marker = tmp_path / "w" / "checkpoints" / "classifier" / "record.json"
  while not marker.exists():  # both processes have joined and started training
    assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "the run did not start"
    time.sleep(0.5)
  time.sleep(2)
  assert len(_service_helpers(procs[0].port)) == 1
  procs[victim].send_signal(signal.SIGKILL)
  killed = time.monotonic()
  survivor = 1 - victim
  code, _, stderr = _wait(procs[survivor:survivor + 1], limit_s=TIMEOUT_S + 60)[0]
  procs[victim].wait()
  assert time.monotonic() - killed < TIMEOUT_S + 15
  assert code == 2
  assert f"process {victim} stopped responding" in _one_error_line(stderr)
  _wait_helper_gone(procs[0].port, TIMEOUT_S + coordinator.GRACE_S + 5)


@pytest.mark.parametrize("timeout", [0, -5, 10 ** 6])
def test_the_timeout_is_checked(timeout):
  c = tiny("unused")
  c.parallel.timeout_s = timeout
  with pytest.raises(VQDefenseError, match="parallel.timeout_s"):
    parallel.ParallelSpec.from_config(c.parallel)
