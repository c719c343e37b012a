"""The watchdog of a multi-process run (core/distributed.py) against a fake coordination service: it names a
process whose heartbeat stopped or that failed, it does not take a process that finished its work for a dead one,
and it ends when told to (before JAX shuts the client down). The two-process runs are test_multiprocess.py."""

import threading
import time

import jax
import pytest

from vqdefense_jax.core import distributed


class FakeClient:
  """The key-value part of JAX's distributed runtime client, in memory."""

  def __init__(self):
    self.store = {}

  def key_value_set(self, key, value, allow_overwrite=False):
    if key in self.store and not allow_overwrite:
      raise RuntimeError(f"{key} exists")
    self.store[key] = value

  def key_value_dir_get(self, prefix):
    return [(k, v) for k, v in list(self.store.items()) if k.startswith(prefix)]


@pytest.fixture
def watch(monkeypatch):
  """Start `_watch` as process 0 of 2 with timeout 1 s and a 0.05 s poll; returns (client, stopped reasons,
  the thread)."""
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(distributed, "POLL_S", 0.05)
  reasons = []

  def stop(reason):  # os._exit would end the process; here the watchdog ends
    reasons.append(reason)
    state["stopping"].set()

  monkeypatch.setattr(distributed, "_stop", stop)
  client = FakeClient()
  state = dict(client=client, timeout=1, stopping=threading.Event())
  monkeypatch.setattr(distributed, "_state", state)
  thread = threading.Thread(target=distributed._watch, daemon=True)
  state["watchdog"] = thread
  thread.start()
  return client, reasons, thread


@pytest.mark.slow
def test_a_silent_process_is_named_within_the_timeout(watch):
  client, reasons, thread = watch
  thread.join(timeout=5)
  assert not thread.is_alive()
  assert len(reasons) == 1 and reasons[0].startswith("process 1 stopped responding")
  assert int(client.store[distributed.ALIVE + "0"]) >= 10  # it beat while it waited


def test_a_failed_process_is_named_at_once(watch):
  client, reasons, thread = watch
  client.key_value_set(distributed.FAILED + "1", "ValueError: bad input")
  thread.join(timeout=0.8)  # before the 1 s heartbeat timeout could fire
  assert reasons == ["process 1 failed: ValueError: bad input"]


@pytest.mark.slow
def test_a_process_that_finished_is_not_taken_for_dead_and_the_watchdog_stops_when_told(watch):
  client, reasons, thread = watch
  client.key_value_set(distributed.DONE + "1", "1")  # process 1 done: it beats no more
  time.sleep(2.0)                                      # twice the timeout
  assert thread.is_alive() and reasons == []
  distributed._stop_watching()                         # what atexit runs
  assert client.store[distributed.DONE + "0"] == "1"
  assert not thread.is_alive() and reasons == []
