"""The resume check every training step gets: interrupted at step 3 of 6 and resumed, bit-identical."""

import chex


def resumes_bit_identically(fit):
  """`fit(tag, stop_at=None)` trains 6 steps (checkpoints every 3) into directory `tag`; returns the full run."""
  full = fit("full")
  part = fit("resumed", stop_at=3)
  assert int(part.step) == 3
  resumed = fit("resumed")
  assert int(resumed.step) == 6
  chex.assert_trees_all_equal(resumed, full)  # every network and optimiser state, bit for bit
  return full
