"""The one training loop: resume is bit-identical (one model, two players, host transforms), checkpoints, batches."""

import dataclasses
import io
import json
import os

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from vqdefense_jax.core import checkpoints, classifier, metrics, parallel, training
from vqdefense_jax.core.errors import VQDefenseError

# --- a small two-player adversarial game: generator vs discriminator, each with its own optimiser -----------


@flax.struct.dataclass
class GANState:
  step: jax.Array
  g: training.TrainState
  d: training.TrainState


@dataclasses.dataclass(frozen=True)
class GANStep:
  """Alternating updates: D on real vs G(z), then G against the updated D (non-saturating losses)."""
  seed: int
  g_opt: training.OptimizerSpec = training.OptimizerSpec("adam", 1e-2)
  d_opt: training.OptimizerSpec = training.OptimizerSpec("adam", 1e-2)

  def init(self) -> GANState:
    kg, kd = jax.random.split(jax.random.key(self.seed))
    g = {"w": jax.random.normal(kg, (4, 16)) * 0.1, "b": jnp.zeros(16)}
    d = {"w": jax.random.normal(kd, (16,)) * 0.1, "b": jnp.zeros(())}
    make = lambda p, opt: training.TrainState(jnp.zeros((), jnp.int32), p, opt.build().init(p), {})
    return GANState(jnp.zeros((), jnp.int32), make(g, self.g_opt), make(d, self.d_opt))

  def __call__(self, s: GANState, real_Bx16):
    z = jax.random.normal(jax.random.fold_in(jax.random.key(self.seed), s.step), (real_Bx16.shape[0], 4))
    gen = lambda g: jnp.tanh(z @ g["w"] + g["b"][None])
    disc = lambda d, x: x @ d["w"] + d["b"]

    def d_loss(d):
      return jnp.mean(jax.nn.softplus(-disc(d, real_Bx16)) + jax.nn.softplus(disc(d, gen(s.g.params))))

    def g_loss(g, d):
      return jnp.mean(jax.nn.softplus(-disc(d, gen(g))))

    def update(ts: training.TrainState, opt, loss_fn, *args):
      loss, grads = jax.value_and_grad(loss_fn)(ts.params, *args)
      updates, opt_state = opt.build().update(grads, ts.opt_state, ts.params)
      return ts.replace(step=ts.step + 1, params=optax.apply_updates(ts.params, updates), opt_state=opt_state), loss

    d, ld = update(s.d, self.d_opt, d_loss)
    g, lg = update(s.g, self.g_opt, g_loss, d.params)
    return GANState(s.step + 1, g, d), dict(loss=lg, d_loss=ld)


def _jpeg(images_Bx16: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A real codec on the host: each 4×4 image re-encoded as JPEG at a random quality (as the detector will)."""
  out = []
  for x in images_Bx16:
    pixels = Image.fromarray(np.uint8(np.clip((x.reshape(4, 4) + 1) * 127.5, 0, 255)), "L")
    buf = io.BytesIO()
    pixels.save(buf, format="JPEG", quality=int(rng.integers(30, 101)))
    out.append(np.asarray(Image.open(buf), np.float32).reshape(16) / 127.5 - 1)
  return np.stack(out)


def _gan_fit(tmp_path, tag, num_steps=10, stop_at=None, **kw):
  real = np.random.default_rng(0).uniform(-1, 1, (64, 16)).astype(np.float32)
  batches = training.HostTransform(lambda step: real[training.IndexBatches(5, 64, 8)(step)], _jpeg, seed=5)
  step = GANStep(seed=3)
  return training.fit(step, step.init, batches, num_steps=num_steps, ckpt_dir=str(tmp_path / tag), name="gan",
                      checkpoint_every=4, log_every=2, stop_at=stop_at, **kw)


@pytest.mark.slow
def test_data_parallel_on_one_device_is_the_same_program_bit_for_bit(tmp_path):
  """Detection and restoration train data-parallel wherever they run: on one device that changes nothing."""
  mesh = parallel.data_mesh(8, jax.devices()[:1])
  assert mesh.shape == {"model": 1, "batch": 1}
  split = _gan_fit(tmp_path, "data_parallel", data_parallel=mesh)
  chex.assert_trees_all_equal(split, _gan_fit(tmp_path, "plain"))
  assert all(len(leaf.devices()) == 1 for leaf in jax.tree.leaves(split))  # one replica, an ordinary array


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [4, 7])  # killed at a checkpoint, and between two (work is redone)
def test_two_player_gan_with_host_jpeg_resumes_bit_identical(tmp_path, stop_at):
  full = _gan_fit(tmp_path, "full")
  part = _gan_fit(tmp_path, "resumed", stop_at=stop_at)
  assert int(part.step) == stop_at
  resumed = _gan_fit(tmp_path, "resumed")
  assert int(resumed.step) == int(resumed.g.step) == int(resumed.d.step) == 10
  chex.assert_trees_all_equal(resumed, full)   # both models and both optimiser states, bit for bit
  # Both players really trained, each with its own optimiser state.
  init = GANStep(seed=3).init()
  assert not np.allclose(full.g.params["w"], init.g.params["w"]) and not np.allclose(full.d.params["w"], init.d.params["w"])
  assert int(full.g.opt_state[0].count) == int(full.d.opt_state[0].count) == 10


def test_host_transform_is_a_pure_function_of_seed_and_step():
  real = np.random.default_rng(0).uniform(-1, 1, (64, 16)).astype(np.float32)
  batches = training.HostTransform(lambda step: real[training.IndexBatches(5, 64, 8)(step)], _jpeg, seed=5)
  np.testing.assert_array_equal(batches(3), batches(3))
  assert not np.array_equal(batches(3), batches(4))
  assert np.abs(batches(3) - real[training.IndexBatches(5, 64, 8)(3)]).max() > 0.01  # the codec changed them


def _classifier_fit(tmp_path, tag, stop_at=None, num_steps=10):
  rng = np.random.default_rng(1)
  x, y = jnp.asarray(rng.uniform(0, 1, (64, 12, 12, 1)), jnp.float32), jnp.asarray(rng.integers(0, 10, 64))
  step = training.SupervisedStep(classifier.ClassifierLoss(), training.OptimizerSpec("adadelta", 1.0, 0.7, 4), 7)
  init = lambda: step.init(classifier.init_params(7, 12), {})
  return training.fit(step, init, training.IndexBatches(7, 64, 16), num_steps=num_steps,
                      ckpt_dir=str(tmp_path / tag), name="classifier", consts=(x, y, None), checkpoint_every=4,
                      log_every=4, stop_at=stop_at)


@pytest.mark.slow
def test_classifier_resume_with_dropout_is_bit_identical(tmp_path):
  full = _classifier_fit(tmp_path, "full")
  _classifier_fit(tmp_path, "resumed", stop_at=5)
  chex.assert_trees_all_equal(_classifier_fit(tmp_path, "resumed"), full)


@pytest.mark.slow
def test_checkpoint_round_trip_and_clear_errors(tmp_path):
  ts = _classifier_fit(tmp_path, "ck", num_steps=4)
  abstract = jax.eval_shape(lambda: ts)
  restored = checkpoints.restore(str(tmp_path / "ck"), abstract)
  chex.assert_trees_all_equal(restored, ts)
  chex.assert_trees_all_equal_structs(restored, ts)
  assert checkpoints.latest_step(str(tmp_path / "ck")) == 4 and checkpoints.latest_step(str(tmp_path / "no")) is None
  with pytest.raises(VQDefenseError, match="no checkpoint"):
    checkpoints.restore(str(tmp_path / "nothing"), abstract)
  with pytest.raises(VQDefenseError, match="beyond the configured 3 steps"):
    _classifier_fit(tmp_path, "ck", num_steps=3)
  for root, _, files in os.walk(tmp_path / "ck" / "4"):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")
  with pytest.raises(VQDefenseError, match="corrupt"):
    checkpoints.restore(str(tmp_path / "ck"), abstract)


@pytest.mark.slow
def test_equal_steps_share_one_compilation(tmp_path):
  training.compiled_step.clear_cache()
  _classifier_fit(tmp_path, "a", num_steps=2)
  _classifier_fit(tmp_path, "b", num_steps=2)   # a new but equal step object: no new compilation
  assert training.compiled_step._cache_size() == 1


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_step():
  n, bs = 50, 8
  batches = training.IndexBatches(3, n, bs)
  epoch = np.concatenate([batches(s) for s in range(n // bs)])
  assert len(set(epoch.tolist())) == len(epoch) == 48
  np.testing.assert_array_equal(batches(9), training.IndexBatches(3, n, bs)(9))
  assert not np.array_equal(batches(0), batches(6))
  with pytest.raises(VQDefenseError):
    training.IndexBatches(0, 5, 8)


def test_optimizer_schedule_decays_per_epoch():
  sched = training.OptimizerSpec("adadelta", 1.0, 0.7, steps_per_epoch=10).schedule()
  np.testing.assert_allclose([sched(0), sched(9), sched(10), sched(25)], [1.0, 1.0, 0.7, 0.49], rtol=1e-6)
  np.testing.assert_allclose(training.OptimizerSpec("adam", 2e-4, 1.0, 7).schedule()(1000), 2e-4)
  with pytest.raises(VQDefenseError):
    training.OptimizerSpec("sgd").build()


def test_schedule_and_loop_sections_are_checked_where_they_are_read():
  import ml_collections
  section = ml_collections.ConfigDict(dict(optimizer="adam", learning_rate=1e-3, lr_decay_per_epoch=1.0,
                                           batch_size=8, epochs=2, steps=0))
  s = training.Schedule.from_config(section, "vqvae")
  assert s.num_steps(100) == 24 and s.optimizer_spec(100).steps_per_epoch == 12
  section.steps = 5
  assert training.Schedule.from_config(section, "vqvae").num_steps(100) == 5
  for key, value, message in [("optimizer", "sgd", "vqvae.optimizer"), ("batch_size", 0, "batch_size")]:
    bad = section.copy_and_resolve_references()
    bad[key] = value
    with pytest.raises(VQDefenseError, match=message):
      training.Schedule.from_config(bad, "vqvae")
  with pytest.raises(VQDefenseError, match="larger than"):
    s.num_steps(4)
  with pytest.raises(VQDefenseError, match="checkpoint_every"):
    training.LoopSpec.from_config(ml_collections.ConfigDict(dict(checkpoint_every=0, log_every=1, sweep=True)))


# --- a run that diverges, metrics after a resume, checkpoints bound to their record -------------------------

@dataclasses.dataclass(frozen=True)
class Diverges:
  """Loss 1.0 until step `at` (1-based), then NaN; with `state_only`, the params go NaN but the loss stays finite."""
  at: int
  state_only: bool = False

  def __call__(self, ts: training.TrainState, batch):
    bad = ts.step + 1 >= self.at
    w = jnp.where(bad & self.state_only, jnp.nan, ts.params["w"] + 1.0)
    loss = jnp.where(bad & (not self.state_only), jnp.nan, 1.0)
    return ts.replace(step=ts.step + 1, params={"w": w}), dict(loss=loss)


def _toy_fit(tmp_path, step, num_steps=20, **kw):
  init = lambda: training.TrainState(jnp.zeros((), jnp.int32), {"w": jnp.zeros(3)}, (), {})
  return training.fit(step, init, lambda i: i, num_steps=num_steps, ckpt_dir=str(tmp_path / "toy"), name="toy",
                      checkpoint_every=4, **kw)


def test_a_diverging_run_stops_at_its_first_non_finite_loss_and_keeps_the_last_good_checkpoint(tmp_path):
  with pytest.raises(VQDefenseError, match=r"toy: training diverged: the loss is nan at step 6; stopped and the "
                                           r"last good checkpoint \(step 4\) is kept"):
    _toy_fit(tmp_path, Diverges(6), log_every=3)
  assert checkpoints.latest_step(str(tmp_path / "toy")) == 4


def test_a_non_finite_state_is_never_saved(tmp_path):
  with pytest.raises(VQDefenseError, match=r"the model state is not finite at step 8.*checkpoint \(step 4\)"):
    _toy_fit(tmp_path, Diverges(6, state_only=True), log_every=100)
  assert checkpoints.latest_step(str(tmp_path / "toy")) == 4


def test_metrics_hold_each_step_once_after_a_resume(tmp_path):
  log = metrics.MetricsLog(str(tmp_path / "metrics.jsonl"))
  _toy_fit(tmp_path, Diverges(10 ** 6), num_steps=10, log_every=1, metrics=log, stop_at=6)  # killed after 6
  with open(log.path, "a") as f:
    f.write('{"model": "toy", "st')  # and in the middle of writing a line
  _toy_fit(tmp_path, Diverges(10 ** 6), num_steps=10, log_every=1, metrics=log)  # resumes from step 4
  rows = [json.loads(line) for line in open(log.path)]
  assert [r["step"] for r in rows] == list(range(1, 11))


def test_a_longer_schedule_resumes_bit_identically_with_training_that_long_at_once(tmp_path):
  once = _classifier_fit(tmp_path, "once", num_steps=10)
  _classifier_fit(tmp_path, "extended", num_steps=6)
  chex.assert_trees_all_equal(_classifier_fit(tmp_path, "extended", num_steps=10), once)


def test_checkpoints_are_bound_to_their_record(tmp_path):
  record = {"model": "toy", "opt": {"lr": 0.1}, "sizes": (4, 6)}
  assert checkpoints.differences(str(tmp_path / "toy"), record) is None   # nothing there yet
  _toy_fit(tmp_path, Diverges(10 ** 6), num_steps=4, log_every=2, record=record)
  assert checkpoints.read_record(str(tmp_path / "toy")) == {"model": "toy", "opt": {"lr": 0.1}, "sizes": [4, 6]}
  assert checkpoints.differences(str(tmp_path / "toy"), record) == []
  other = {"model": "toy", "opt": {"lr": 0.2}, "sizes": (4, 6), "seed": 1}
  assert checkpoints.differences(str(tmp_path / "toy"), other) == ["opt.lr: 0.1 -> 0.2", "seed: (absent) -> 1"]
  with pytest.raises(VQDefenseError, match=r"were made by another config \(opt.lr: 0.1 -> 0.2; seed"):
    _toy_fit(tmp_path, Diverges(10 ** 6), num_steps=8, log_every=2, record=other)
  assert checkpoints.latest_step(str(tmp_path / "toy")) == 4  # untouched


@pytest.mark.slow
def test_releasing_compiled_code_frees_its_memory_maps():
  """The suite stays under Linux's vm.max_map_count only because dropping jit caches unmaps executables."""
  import support
  if not support.memory_maps():
    pytest.skip("no /proc/self/maps here")
  support.release_compiled_code()
  before = support.memory_maps()
  fns = [jax.jit(lambda x, k=k: jnp.sin(x) * k + jnp.cos(x * k)) for k in range(40)]
  for f in fns:
    f(jnp.ones(3)).block_until_ready()
  grown = support.memory_maps()
  support.release_compiled_code()
  assert grown > before + 40, (before, grown)
  assert support.memory_maps() < grown - 40, (before, grown, support.memory_maps())
