"""The coordination service of a multi-process run, in a small process of its own (core/distributed.py).

JAX starts the service inside process 0. When process 0 is killed the service dies with it, and JAX's
runtime aborts every other process at once with pages of its own output. Started here instead, by process 0
before it joins, the service outlives process 0: its death is then seen like any other process's (its
heartbeat stops, and the others' watchdogs name it within `parallel.timeout_s`).

The helper process imports JAX but starts no backend (no devices). It starts the service, prints READY on
stdout, and then reads its stdin, a pipe from process 0: the line DONE means process 0 finished its work; the
end of the pipe means process 0 has exited, or died. The service then stays up `LINGER_S` after a normal end
(the others are leaving JAX's shutdown barrier with process 0) or `timeout + GRACE_S` after anything else (so
the others read why process 0 stopped, or see that its heartbeat stopped, and say so), and the helper exits.
It runs in a session of its own (a Ctrl-C in process 0's terminal does not reach it) and writes nowhere once
it is ready, so a caller waiting for process 0's output does not wait for the helper.

The service's bind address is JAX's own choice: JAX_COORDINATOR_BIND_ADDRESS, else `[::]:<coordinator port>`.
Process 0 then joins with its own (unused) service bound to a free local port (`UNUSED_BIND`): that is
`jax.distributed.initialize`'s public way to leave the coordinator port to the helper.
"""

import os
import select
import signal
import subprocess
import sys
import time

from vqdefense_jax.core.errors import VQDefenseError

READY, DONE = "ready", "done"
UNUSED_BIND = "127.0.0.1:0"  # process 0's own service: gRPC picks a free port, and no client ever connects
LINGER_S = 2.0                # after a normal end
START_S = 30.0                # process 0 waits at least this long for it to start (it imports JAX)
GRACE_S = 5.0                 # after process 0 stopped otherwise: timeout + this (the watchdogs poll each second)
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bind_address(coordinator_address: str) -> str:
  """Where JAX itself would bind the service for this coordinator address."""
  return os.environ.get("JAX_COORDINATOR_BIND_ADDRESS") or "[::]:" + coordinator_address.rsplit(":", 1)[1]


def start(bind: str, num_processes: int, timeout: int, recoverable: bool = False) -> subprocess.Popen:
  """Start the helper and wait until its service listens (up to `timeout`, and at least START_S: it imports
  JAX first); a clear error otherwise."""
  code = (f"import sys; sys.path.insert(0, {_ROOT!r}); from vqdefense_jax.core import coordinator; "
          "coordinator.main(sys.argv[1:])")
  env = dict(os.environ, JAX_PLATFORMS="cpu")  # it needs no accelerator
  helper = subprocess.Popen([sys.executable, "-c", code, bind, str(num_processes), str(timeout),
                             str(int(recoverable))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
  wait = max(timeout, START_S)
  said, deadline = b"", time.monotonic() + wait
  while time.monotonic() < deadline:  # raw reads: a buffered reader could hold READY back from select
    ready, _, _ = select.select([helper.stdout], [], [], max(0.0, deadline - time.monotonic()))
    chunk = os.read(helper.stdout.fileno(), 65536) if ready else b""
    said += chunk
    if READY.encode() in said.splitlines():
      helper.stdout.close()
      return helper
    if not chunk:  # it exited, or said nothing in time
      break
  helper.kill()
  helper.wait()
  lines = [line.strip() for line in said.decode(errors="replace").splitlines() if line.strip()]
  why = lines[-1] if lines else f"it said nothing within {wait:g} s (exit status {helper.returncode})"
  if any("Failed to add port" in line for line in lines):  # gRPC's words; the service then crashes
    why = "cannot listen there (is the port in use, by another run? JAX_COORDINATOR_ADDRESS names it)"
  raise VQDefenseError(f"could not start the coordination service on {bind}: {why}")


def finished(helper: subprocess.Popen) -> None:
  """Process 0 finished its work: the helper lingers only briefly once process 0 has exited."""
  try:
    helper.stdin.write(f"{DONE}\n".encode())
    helper.stdin.flush()
  except OSError:  # it is gone already
    pass


def main(argv: list[str]) -> None:
  """The helper process: argv = bind address, number of processes, timeout in seconds, recoverable (0/1)."""
  bind, num_processes, timeout, recoverable = argv[0], int(argv[1]), int(argv[2]), bool(int(argv[3]))
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top  (JAX's service has no public API)
  service = _jax.get_distributed_runtime_service(bind, num_processes, heartbeat_timeout=2 * timeout,
                                                 shutdown_timeout=timeout, recoverable=recoverable)
  os.write(1, f"{READY}\n".encode())  # one write (print's flush can meet the pipe that process 0 closed)
  try:
    quiet = os.open(os.devnull, os.O_WRONLY)  # from now on it writes nowhere
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    done = False
    for line in sys.stdin:
      done = done or line.strip() == DONE
    time.sleep(LINGER_S if done else timeout + GRACE_S)
  finally:  # never through the service's destructor: it waits for clients that may be gone
    os._exit(0)  # pylint: disable=protected-access
