"""The coordination service's helper process (core/coordinator.py): it serves JAX's clients, it outlives process 0
long enough for the others to name it and then ends, it ends soon after a normal end, a port in use is one clear
error, and only process 0 of a run starts it (core/distributed.py). The two-process runs, with process 0 killed,
are test_multiprocess.py."""

import socket
import subprocess
import sys

import pytest

from support import free_port
from vqdefense_jax.core import coordinator, distributed
from vqdefense_jax.core.errors import VQDefenseError

CLIENT = """
import sys
from jax._src.lib import _jax
client = _jax.get_distributed_runtime_client(sys.argv[1], 0, init_timeout=10, heartbeat_timeout=10)
client.connect()
client.key_value_set("k", "served")
print(client.blocking_key_value_get("k", 5000))
client.shutdown()
"""


def _ended_within(helper: subprocess.Popen, seconds: float) -> bool:
  try:
    helper.wait(timeout=seconds)
    return True
  except subprocess.TimeoutExpired:
    return False


@pytest.mark.slow
def test_the_helper_serves_a_client_and_ends_soon_after_a_normal_end():
  port = free_port()
  helper = coordinator.start(f"127.0.0.1:{port}", 1, timeout=10)
  try:
    client = subprocess.run([sys.executable, "-c", CLIENT, f"127.0.0.1:{port}"], capture_output=True,
                            text=True, timeout=60, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
    assert client.returncode == 0, client.stderr[-2000:]
    assert client.stdout.strip() == "served"
    assert helper.poll() is None
    coordinator.finished(helper)  # what process 0 says at its normal end
    assert helper.poll() is None  # ... and it serves on until process 0 has exited
    helper.stdin.close()          # process 0 exited
    assert _ended_within(helper, coordinator.LINGER_S + 5)
    assert helper.returncode == 0
  finally:
    helper.kill()


@pytest.mark.slow
def test_the_helper_outlives_a_process_0_that_died_long_enough_for_the_others_to_name_it():
  helper = coordinator.start(f"127.0.0.1:{free_port()}", 2, timeout=1)
  try:
    helper.stdin.close()  # process 0 is gone, without a word
    assert not _ended_within(helper, coordinator.LINGER_S + 1)  # the others' watchdogs need timeout + a poll
    assert _ended_within(helper, 1 + coordinator.GRACE_S + 5)
  finally:
    helper.kill()


@pytest.mark.slow
def test_a_port_in_use_is_one_clear_error():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    s.listen()
    with pytest.raises(VQDefenseError, match=r"could not start the coordination service on 127\.0\.0\.1:\d+: "
                                             r"cannot listen there \(is the port in use"):
      coordinator.start(f"127.0.0.1:{s.getsockname()[1]}", 2, timeout=10)


def test_the_bind_address_is_jaxs(monkeypatch):
  monkeypatch.delenv("JAX_COORDINATOR_BIND_ADDRESS", raising=False)
  assert coordinator.bind_address("10.0.0.7:1234") == "[::]:1234"
  monkeypatch.setenv("JAX_COORDINATOR_BIND_ADDRESS", "10.0.0.7:4321")
  assert coordinator.bind_address("10.0.0.7:1234") == "10.0.0.7:4321"


@pytest.mark.parametrize("process_id", [1, 3])
def test_only_process_0_starts_the_service(monkeypatch, process_id):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", f"127.0.0.1:{free_port()}")
  monkeypatch.setattr(coordinator, "start", lambda *a: pytest.fail("only process 0 starts the service"))
  kwargs, helper = distributed._start_service({"num_processes": 4, "process_id": process_id}, 10)
  assert helper is None and kwargs == {"num_processes": 4, "process_id": process_id}


@pytest.mark.slow
def test_process_0_leaves_the_coordinator_port_to_the_helper(monkeypatch):
  port = free_port()
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", f"127.0.0.1:{port}")
  monkeypatch.setenv("JAX_COORDINATOR_BIND_ADDRESS", f"127.0.0.1:{port}")
  kwargs, helper = distributed._start_service({"num_processes": 2, "process_id": 0}, 10)
  try:
    assert kwargs == {"num_processes": 2, "process_id": 0, "coordinator_bind_address": coordinator.UNUSED_BIND}
    with socket.socket() as s, pytest.raises(OSError):
      s.bind(("127.0.0.1", port))  # the helper's service holds it
  finally:
    helper.kill()


def test_without_a_known_process_id_jax_starts_the_service_as_always(monkeypatch):
  for env in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(env, raising=False)
  monkeypatch.setattr(coordinator, "start", lambda *a: pytest.fail("no helper without a process id"))
  assert distributed._start_service({}, 10) == ({}, None)
