"""Bad input through train.py and evaluate.py: exit 2, exactly one `error:` line, no traceback, and not one
file of the workdir changed. The workdir is a copy of a trained one, so a command that silently reused or
overwrote something would show here.
"""

import errno
import fcntl
import hashlib
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import evaluate
import train
from support import synthetic_mnist
from vqdefense_jax.core import cli, files
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify import config as purify_config
from vqdefense_jax.purify import experiment

SCRIPTS = {"train": (train, []), "evaluate": (evaluate, []), "grid": (evaluate, ["--grid"])}


def snapshot(directory) -> dict[str, str]:
  """{relative path: sha256} of every file under `directory`."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      out[os.path.relpath(path, directory)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
  return out


def rejects(script: str, argv: list[str], workdir, capsys) -> str:
  """Run `script` in-process on `workdir`: exit 2, one `error:` line and nothing else on stderr but the
  progress bars of work done before the failure, no exception escaping (a traceback), and the workdir
  unchanged. Returns the error line."""
  before = snapshot(workdir)
  capsys.readouterr()
  module, switches = SCRIPTS[script]
  try:
    rc = module.main(switches + ["--workdir", str(workdir)] + argv)
  except BaseException as e:  # pragma: no cover - the failure being tested for
    pytest.fail(f"{script} {argv}: {type(e).__name__} escaped (a traceback): {e}")
  err = [line for line in capsys.readouterr().err.strip().splitlines() if "%|" not in line]  # tqdm bars
  assert rc == 2, (script, argv, rc, err)
  assert len(err) == 1 and err[0].startswith("error: "), (script, argv, err)
  assert snapshot(workdir) == before, f"{script} {argv} changed the workdir"
  return err[0]


@pytest.fixture
def workdir(trained, tmp_path):
  return trained.copy(tmp_path / "run")


VALUES = [  # (override, part of the message); each is tried with train.py, evaluate.py and evaluate.py --grid
    ("--config.classifier.steps=2.5", "cannot parse '2.5' for config key 'classifier.steps'"),
    ("--config.data.image_size=24.9", "cannot parse '24.9' for config key 'data.image_size'"),
    ("--config.vqvae.decay=1.5", "vqvae.decay must be in [0, 1), got 1.5"),
    ("--config.vqvae.commitment_cost=-3", "vqvae.commitment_cost must be >= 0, got -3"),
    ("--config.vqvae.codebook_sizes=True", "vqvae.codebook_sizes must be a list of integers, got (True,)"),
    ("--config.classifier.learning_rate=-1", "classifier.learning_rate must be > 0, got -1"),
    ("--config.classifier.learning_rate=1e999", "classifier.learning_rate must be a finite number, got inf"),
    ("--config.vqvae.learning_rate=nan", "vqvae.learning_rate must be a finite number, got nan"),
    ("--config.vqvae.codebook_sizes=16,abc", "vqvae.codebook_sizes must be a list of integers, got ('16', 'abc')"),
    ("--config.attack.epsilons=0,abc", "attack.epsilons must be a list of finite numbers"),
    ("--config.vqvae.embedding_dim=0", "vqvae.embedding_dim must be in 1..4096, got 0"),
    ("--config.vqvae.channels=0", "vqvae.channels must be in 1..1024, got 0"),
    ("--config.seed=-1", "seed must be in 0..4294967295, got -1"),
    ("--config.seed=True", "cannot parse 'True' for config key 'seed'"),
    ("--config.classifier.steps=1e999", "cannot parse '1e999' for config key 'classifier.steps'"),
    ("--config.classifier.steps=[5]", "cannot parse '[5]' for config key 'classifier.steps'"),
    ("--config.classifier.steps=2000000000", "classifier: epochs or steps must be > 0 (and at most"),
    ("--config.vqvae.codebook_sizes=100000000000", "must be at most 65536"),
    ("--config.vqvae.k_max=100000000000", "must be at most 65536"),
    ("--config.data.image_size=100000", "data.image_size must be in 8..256"),
    ("--config.vqvae.epsilon=0", "vqvae.epsilon must be in (0, 1]"),
    ("--config.vqvae.batch_size=0", "vqvae.batch_size must be in 1..65536"),
    ("--config.vqvae.batch_size=1000", "batch size 1000 is larger than the 240 training examples"),
    ("--config.classifier.batch_size=1000", "larger than the 240 training examples: lower classifier.batch_size"),
    ("--config.data.train_subset=-5", "data.train_subset must be >= 0"),
    ("--config.data.train_subset=100000", "data.train_subset=100000 but only 240"),
    ("--config.vqvae.split_k=0", "not divisible by vqvae.split_k 0"),
    ("--config.attack.epsilons=0.1,1.5", "attack.epsilons"),
    ("--config.attack.epsilons=-0.1", "attack.epsilons"),
    ("--config.vqvae.codebook_sizes=0,4", "codebook size 0"),
    ("--config.vqvae.codebook_sizes=4,9", "codebook size 9"),
    ("--config.vqvae.codebook_sizes=4,4", "duplicates"),
    ("--config.data.image_size=28", "does not round-trip"),
    ("--config.vqvae.split_k=5", "not divisible"),
    ("--config.vqvae.bogus=1", "unknown config key 'vqvae.bogus'"),
    ("--config.vqvae.layout=sideways", "vqvae.layout"),
    ("--config.grid.pairing=worst", "grid.pairing"),
    ("--config.grid.best_eps_max=-1", "grid.best_eps_max"),
    ("--config.grid.chunk_size=-1", "grid.chunk_size"),
    ("--config.grid.chunk_size=100000000", "grid.chunk_size"),
    ("--config.parallel.grid_model_axis=pmap", "parallel.grid_model_axis"),
    ("--config.attack.names=fgsm,cw", "attack.names"),
    ("--config.attack.pgd_steps=0", "attack.pgd_steps"),
    ("--config.vqvae.split_ks=3", "vqvae.split_ks"),
    ("--config.vqvae.training=clean,robust", "vqvae.training"),
    ("--config.eval.purifiers=none", "at least one purifier"),
    ("--config.eval.figure_examples=100000", "eval.figure_examples"),
    ("--config.train.log_every=0", "train.log_every"),
    ("--config.classifier.input_std=0", "classifier.input_std must be in (0, 1000]"),
    ("--config.eval.counting=majority", "eval.counting must be one of ('final', 'clean_and_final')"),
    ("--config.weights.source=onnx", "weights.source must be one of ('train', 'torch')"),
    ("--config.weights.source=torch", "weights.source='torch' needs weights.torch_dir"),
    ("--workdirr=x", "Unknown command line flag 'workdirr'"),
    ("positional", "unrecognized argument 'positional'"),
]


@pytest.mark.slow
@pytest.mark.parametrize("override,message", VALUES, ids=[v[0] for v in VALUES])
def test_bad_value(trained, workdir, capsys, override, message):
  for script in SCRIPTS:
    assert message in rejects(script, ["--config", trained.config_file, override], workdir, capsys)


MADE_BY_ANOTHER_CONFIG = [  # (script, override, the differing field as the error names it)
    ("train", "--config.seed=1", "seed: 0 -> 1"),
    ("train", "--config.vqvae.learning_rate=0.001", "vqvae.learning_rate: 0.0002 -> 0.001"),
    ("train", "--config.vqvae.decay=0.5", "vqvae.decay: 0.9 -> 0.5"),
    ("train", "--config.vqvae.commitment_cost=0.5", "vqvae.commitment_cost: 0.25 -> 0.5"),
    ("train", "--config.vqvae.layout=per_position", "vqvae.layout: nchw_chunks -> per_position"),
    ("train", "--config.data.train_subset=200", "data.train_examples: 240 -> 200"),
    ("train", "--config.classifier.learning_rate=0.5", "classifier.learning_rate: 1.0 -> 0.5"),
    ("train", "--config.classifier.input_mean=0.0", "classifier.input_mean: 0.1307 -> 0.0"),
    ("grid", "--config.classifier.batch_size=8", "classifier.batch_size: 16 -> 8"),
    ("evaluate", "--config.seed=7", "seed: 0 -> 7"),
    ("evaluate", "--config.vqvae.channels=16", "vqvae.channels: 8 -> 16"),
]


@pytest.mark.slow
@pytest.mark.parametrize("script,override,field", MADE_BY_ANOTHER_CONFIG)
def test_checkpoints_made_by_another_config_are_not_reused(trained, workdir, capsys, script, override, field):
  line = rejects(script, ["--config", trained.config_file, override], workdir, capsys)
  assert "were made by another config" in line and field in line and "--retrain" in line


def _bad_file(tmp_path, body: str) -> str:
  path = tmp_path / "bad.py"
  path.write_text("from vqdefense_jax.purify.config import base_config\n\ndef get_config():\n  c = base_config()\n"
                  + "".join(f"  {line}\n" for line in body.splitlines()) + "  return c\n")
  return str(path)


def _labels_out_of_range(tmp_path, trained):
  data = tmp_path / "badlabels"
  data.mkdir()
  arrays = synthetic_mnist()
  arrays["train_labels"][3] = 12
  np.savez(data / "mnist_uint8.npz", **arrays)
  return ["--config", trained.config_file, f"--config.data.cache_dir={data}"]


def _float_images(tmp_path, trained):
  data = tmp_path / "floats"
  data.mkdir()
  arrays = synthetic_mnist()
  arrays["test_images"] = arrays["test_images"].astype(np.float32)
  np.savez(data / "mnist_uint8.npz", **arrays)
  return ["--config", trained.config_file, f"--config.data.cache_dir={data}"]


def _record_missing(tmp_path, trained):
  os.remove(os.path.join(tmp_path, "run", "checkpoints", "classifier", "record.json"))
  return ["--config", trained.config_file]


def truncate_latest_checkpoint(directory) -> None:
  """Cut every data file of the newest checkpoint in `directory` to half its length (a disk that filled up)."""
  latest = max((d for d in os.listdir(directory) if d.isdigit()), key=int)
  for root, _, names in os.walk(os.path.join(directory, latest)):
    if os.path.basename(root) == "d":
      for name in names:
        path = os.path.join(root, name)
        os.truncate(path, os.path.getsize(path) // 2)


def _truncated_checkpoint(tmp_path, trained):
  truncate_latest_checkpoint(os.path.join(tmp_path, "run", "checkpoints", "classifier"))
  return ["--config", trained.config_file]


SITUATIONS = {  # name: (scripts, setup(tmp_path, trained) -> argv, part of the message)
    "config file with a syntax error": (
        ("train", "grid"), lambda p, t: ["--config", _bad_file(p, "c.seed = (")], "SyntaxError"),
    "config file sets an int field to 2.5": (
        ("train",), lambda p, t: ["--config", _bad_file(p, "c.classifier.steps = 2.5")], "config file"),
    "config file misspells a key": (
        ("train",), lambda p, t: ["--config", _bad_file(p, "c.vqvae.codebok_sizes = (4,)")],
        "unknown config key 'codebok_sizes' (did you mean 'codebook_sizes'?)"),
    "config file raises": (("grid",), lambda p, t: ["--config", _bad_file(p, "1 / 0")], "ZeroDivisionError"),
    "config file not found": (("train",), lambda p, t: ["--config", str(p / "nope.py")], "not found"),
    "labels outside 0..9": (("train", "evaluate"), _labels_out_of_range, "labels of the offline data must be"),
    "images that are not uint8": (("train",), _float_images, "is corrupt"),
    "checkpoint without its record": (("train", "evaluate"), _record_missing, "record.json missing"),
    "truncated checkpoint": (("train", "evaluate", "grid"), _truncated_checkpoint, "is corrupt"),
    "--retrain without --grid": (("evaluate",), lambda p, t: ["--config", t.config_file, "--retrain"],
                                 "--retrain trains"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", SITUATIONS)
def test_bad_situation(trained, workdir, tmp_path, capsys, name):
  scripts, setup, message = SITUATIONS[name]
  argv = setup(tmp_path, trained)
  for script in scripts:
    assert message in rejects(script, argv, workdir, capsys), name


@pytest.mark.slow
def test_a_second_process_on_the_same_workdir_is_refused(trained, workdir, capsys):
  fd = os.open(workdir, os.O_RDONLY)  # what a running train.py holds
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    for script in SCRIPTS:
      assert "is in use by another" in rejects(script, ["--config", trained.config_file], workdir, capsys)
  finally:
    os.close(fd)
  with files.locked(workdir):  # and the lock is taken by the commands themselves
    with pytest.raises(VQDefenseError, match="in use"):
      with files.locked(workdir):
        pass


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
  """A copy of the trained workdir with the grid's outputs."""
  workdir = trained.copy(tmp_path_factory.mktemp("evaluated") / "run")
  assert evaluate.main(["--config", trained.config_file, "--workdir", workdir]) == 0
  return workdir


def _damage(name: str, mode: str):
  def setup(workdir):
    path = os.path.join(workdir, name)
    data = open(path, "rb").read()
    open(path, "wb").write(b"" if mode == "empty" else data[:len(data) // 2])
  return setup


@pytest.mark.slow
@pytest.mark.parametrize("name,mode", [("grid.json", "empty"), ("grid.json", "truncated"), ("grid.npz", "truncated"),
                                       ("grid.npz", "empty")])
def test_plot_only_with_damaged_results(evaluated, tmp_path, capsys, name, mode):
  import shutil
  workdir = shutil.copytree(evaluated, tmp_path / "run")
  _damage(name, mode)(workdir)
  line = rejects("evaluate", ["--plot-only"], workdir, capsys)
  assert "cannot read the grid results" in line and "--grid" in line


@pytest.mark.slow
def test_a_full_disk_while_writing_results_keeps_the_previous_ones(trained, evaluated, tmp_path, capsys, monkeypatch):
  import shutil
  workdir = shutil.copytree(evaluated, tmp_path / "run")

  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "grid.npz"))
  monkeypatch.setattr(np, "savez", no_space)
  line = rejects("evaluate", ["--config", trained.config_file], workdir, capsys)
  assert "No space left on device" in line


# --- property-based: any value for any field is a valid experiment or one error, never a traceback ---------

def _fields(section, prefix=""):
  for key, value in section.items():
    if hasattr(value, "items"):
      yield from _fields(value, prefix + key + ".")
    else:
      yield prefix + key


FIELDS = sorted(_fields(purify_config.base_config()))
TEXT = st.one_of(
    st.integers(-2 ** 70, 2 ** 70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["True", "false", "", "None", "[5]", "()", "1e999", "-0.0", "abc", "1,2", "0,abc", "4,6",
                     "clean,adversarial", "fgsm,pgd", "none,no_split,restorer", "(1,)", "{}", "'x'", "2.5", "map", "offline"]),
    st.lists(st.integers(-10, 2 ** 20), min_size=1, max_size=3).map(lambda v: ",".join(map(str, v))),
    st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=8))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FIELDS), TEXT), min_size=1, max_size=3))
def test_any_override_is_a_valid_experiment_or_one_error(trained, overrides):
  argv = ["--config", trained.config_file] + [f"--config.{k}={v}" for k, v in overrides]
  try:
    args = cli.parse(argv, "")
    exp = experiment.Experiment.from_config(args.config)
  except VQDefenseError as e:
    assert str(e).strip() and "\n" not in " ".join(str(e).split())
    return
  # Valid: every run the experiment would train is well defined (its state's shapes, its record).
  import jax
  try:
    runs = experiment.all_runs(exp, trained.ds)
  except VQDefenseError:
    return  # e.g. a batch larger than the training set, known only once the data is loaded
  for run in runs:
    jax.eval_shape(run.init)
    json.dumps(run.record)
