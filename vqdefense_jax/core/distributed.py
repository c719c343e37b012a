"""Several processes (hosts) in one run: joining, and failing together within a bounded time.

Left to itself, JAX's distributed runtime answers a failed process by keeping the others waiting (in a
collective, or at its shutdown barrier, 300 s by default) and then aborting them with pages of
coordination-service output and stack traces. Here, with `parallel.timeout_s` = T:

- joining the run is bounded by T (a process that never starts is an error after T seconds, not a hang);
- a process that fails with an error prints it, publishes one line in the coordination service's key-value
  store and exits at once (no shutdown barrier);
- a watchdog thread in every process beats once a second and reads the store: another process's failure, a
  heartbeat that has not moved for T seconds (a killed or frozen process) or a lost coordinator ends this
  process too, with exit status 2 and one `error:` line naming the failed process. JAX's own heartbeat
  timeout is set to 2T, so the watchdog speaks first. The coordination service runs in a helper process
  that process 0 starts (core/coordinator.py), not inside process 0 as JAX would have it: killed, process 0
  is named like any other process (inside it, its death would abort the others at once with JAX's long
  report). With JAX's mTLS options, or if JAX's (private) cluster detection fails before joining, process 0
  hosts the service as in plain JAX, and its death is that long report;
- a process that finished its work marks itself done (its silence is then no failure) and stops its watchdog
  before JAX's shutdown barrier;
- `kill -USR1 <pid>` prints every thread's Python stack (a stuck run, diagnosed).

Every process computes the same values from the same config and data; only process 0 writes files (`is_lead`).
JAX finds the coordinator, process count and process id by itself on Cloud TPU, SLURM, Open MPI and
Kubernetes; elsewhere set JAX_COORDINATOR_ADDRESS (read by JAX), JAX_NUM_PROCESSES and JAX_PROCESS_ID (read
here). README.md, *Several processes or hosts*, has the commands.
"""

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
import traceback

import jax

from vqdefense_jax.core.errors import VQDefenseError

FAILED = "vqdefense/failed/"     # key-value store: FAILED<process id> = one-line reason
ALIVE = "vqdefense/alive/"       # ALIVE<process id> = heartbeat counter
DONE = "vqdefense/done/"         # DONE<process id>: it finished its work and stopped beating (JAX's shutdown next)
EXIT_STATUS = 2                  # the command line's status for an error
POLL_S = 1.0                     # the watchdog's period
_state: dict = {}                # 'client', 'timeout', 'stopping', 'watchdog' once joined


def joined() -> bool:
  return "client" in _state


def join(timeout_s: float) -> None:
  """Join the multi-process run (before any other JAX call); start the watchdog. Process 0 first starts the
  coordination service in a helper process (core/coordinator.py), where it can tell it is process 0."""
  if joined():
    return
  kwargs = {}
  for key, env in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
    if os.environ.get(env):
      kwargs[key] = int(os.environ[env])
  timeout = max(1, int(timeout_s))
  kwargs, helper = _start_service(kwargs, timeout)
  try:
    jax.distributed.initialize(**kwargs, initialization_timeout=timeout, shutdown_timeout_seconds=timeout,
                               heartbeat_timeout_seconds=2 * timeout)  # the watchdog reports first
  except Exception as e:  # pylint: disable=broad-except  (the runtime raises several types)
    if helper is not None:
      helper.kill()
    raise VQDefenseError(f"process {kwargs.get('process_id', '?')} could not join the run (waited up to "
                         f"parallel.timeout_s = {timeout} s): {_first_line(e)}") from e
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:  # process 0 reports; the others warn and fail only
    logging.getLogger().setLevel(logging.WARNING)  # (and their progress bars are off: parallel.is_lead)
  watchdog = threading.Thread(target=_watch, name="vqdefense-watchdog", daemon=True)
  _state.update(client=jax_distributed.global_state.client, timeout=timeout, stopping=threading.Event(),
                watchdog=watchdog, helper=helper)
  if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID` prints every thread's stack (a stuck run, diagnosed)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
  watchdog.start()
  import atexit  # pylint: disable=g-import-not-at-top
  atexit.register(_stop_watching)  # runs before JAX's shutdown (registered earlier)


def _start_service(kwargs: dict, timeout: int):
  """In process 0: the coordination service in a helper process, and the arguments that make JAX leave the
  coordinator port to it; (kwargs, None) in the others, and where the process id cannot be learnt before
  joining or JAX's mTLS options are set (JAX then starts the service in process 0 itself, as it always does)."""
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if kwargs.get("process_id") is None or address is None or kwargs.get("num_processes") is None:
    try:  # what jax.distributed.initialize would detect (Cloud TPU, SLURM, Open MPI, Kubernetes)
      from jax._src import clusters  # pylint: disable=g-import-not-at-top
      address, num, pid, _ = clusters.ClusterEnv.auto_detect_unset_distributed_params(
          address, kwargs.get("num_processes"), kwargs.get("process_id"), None, None, timeout)
    except Exception:  # pylint: disable=broad-except  (JAX then reports it)
      return kwargs, None
    if None in (address, num, pid):
      return kwargs, None
    kwargs = dict(kwargs, coordinator_address=address, num_processes=num, process_id=pid)
  if kwargs["process_id"] != 0 or any(getattr(jax.config, f"jax_mtls_{name}", None)
                                      for name in ("cert_file", "key_file", "ca_file")):
    return kwargs, None  # (a service with mTLS credentials: JAX's own)
  from vqdefense_jax.core import coordinator  # pylint: disable=g-import-not-at-top
  bind = coordinator.bind_address(address)
  helper = coordinator.start(bind, kwargs["num_processes"], timeout,
                             bool(getattr(jax.config, "jax_enable_recoverability", False)))
  logging.getLogger(__name__).info("coordination service on %s (helper process %d)", bind, helper.pid)
  # JAX's next line would name the unused service of process 0 itself:
  logging.getLogger("jax._src.distributed").addFilter(lambda r: coordinator.UNUSED_BIND not in r.getMessage())
  return dict(kwargs, coordinator_bind_address=coordinator.UNUSED_BIND), helper


def _stop_watching() -> None:
  """At a normal end: stop the watchdog and wait for it, before JAX shuts the client down. A daemon thread still
  inside a client call when the interpreter finalizes is ended by an unwind that the C++ binding does not let
  through, and the whole process aborts ("FATAL: exception not rethrown") after a successful run."""
  try:  # its silence from now on is no failure (the others may still be writing their results)
    _state["client"].key_value_set(DONE + str(jax.process_index()), "1")
  except Exception:  # pylint: disable=broad-except
    pass
  _state["stopping"].set()
  _state["watchdog"].join(timeout=5 * POLL_S)
  if _state.get("helper") is not None:  # the service lingers only briefly once this process exits
    from vqdefense_jax.core import coordinator  # pylint: disable=g-import-not-at-top
    coordinator.finished(_state["helper"])


def barrier(name: str) -> None:
  """Wait until every process has called `barrier` with this name as often as this one (the watchdog ends the
  wait if a process fails)."""
  count = _state.setdefault("barriers", {}).get(name, 0) + 1
  _state["barriers"][name] = count
  _state["client"].wait_at_barrier(f"vqdefense/{name}/{count}", 1000 * 86400)


def fail(message: str) -> None:
  """This process failed (its error is already printed): tell the others, and exit now."""
  try:
    _state["client"].key_value_set(FAILED + str(jax.process_index()), " ".join(message.split())[:500])
  except Exception:  # pylint: disable=broad-except  (the coordinator may be gone already)
    pass
  if jax.process_index() == 0 and _state.get("helper") is None:  # it hosts the coordination service: let the
    time.sleep(2 * POLL_S)                                        # others read the reason first
  _exit()


def fail_with_traceback(e: BaseException) -> None:
  """This process hit an unexpected error. A collective whose peer died fails like a bug (a JAX runtime error):
  give the watchdog up to timeout_s to name that peer (it then ends the process with that one line), and only
  then report this error as this process's failure."""
  if isinstance(e, jax.errors.JaxRuntimeError):
    time.sleep(_state["timeout"] + 2 * POLL_S)
  traceback.print_exception(e)
  fail(f"{type(e).__name__}: {_first_line(e)}")


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return (text.splitlines()[0] if text else type(e).__name__)[:300]


def _exit() -> None:
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(EXIT_STATUS)  # pylint: disable=protected-access  (no atexit: JAX's shutdown barrier would wait)


def _stop(reason: str) -> None:
  # Process 0 shows progress bars (parallel.is_lead): the main thread may be blocked mid-bar, with no newline.
  start = "\n" if jax.process_index() == 0 else ""
  print(f"{start}error: {reason}; process {jax.process_index()} stops too", file=sys.stderr)
  _exit()


def _watch() -> None:
  client, timeout, me, n = _state["client"], _state["timeout"], jax.process_index(), jax.process_count()
  seen = {p: (None, time.monotonic()) for p in range(n) if p != me}  # heartbeat value, when it last moved
  beat, stopping = 0, _state["stopping"]
  while not stopping.is_set():
    beat += 1
    try:
      client.key_value_set(ALIVE + str(me), str(beat), allow_overwrite=True)
      failed = client.key_value_dir_get(FAILED)
      alive = {key.rsplit("/", 1)[-1]: value for key, value in client.key_value_dir_get(ALIVE)}
      done = {key.rsplit("/", 1)[-1] for key, _ in client.key_value_dir_get(DONE)}
    except Exception as e:  # pylint: disable=broad-except
      if stopping.is_set():  # the run is over: the coordinator shut down normally
        return
      _stop(f"lost the coordination service (process 0 stopped?): {_first_line(e)}")
    for key, reason in failed:
      if key.rsplit("/", 1)[-1] != str(me):
        _stop(f"process {key.rsplit('/', 1)[-1]} failed: {reason}")
    now = time.monotonic()
    for p, (value, since) in seen.items():
      if alive.get(str(p)) != value or str(p) in done:
        seen[p] = (alive.get(str(p)), now)
      elif now - since > timeout and not stopping.is_set():
        _stop(f"process {p} stopped responding {timeout} s ago (killed, or frozen; parallel.timeout_s)")
    stopping.wait(POLL_S)
