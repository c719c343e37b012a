"""The paper authors' PyTorch weights as this project's models: classifier, No-Split and 4-Split VQ-VAEs.

  python -m vqdefense_jax.purify.interop import-torch --config configs/purify/authors.py --workdir runs/authors

reads the state dicts of a clone of the authors' repository (`weights.torch_dir`, laid out as
noodles8436/Split-Defense-VAE: classifier_model/lenet_mnist_model.pth, NoSplitted_VAE/VQ-VAE.pth,
Splitted_VAE/VQ-VAE.pth) without PyTorch (`core.torch_pickle`) and writes them as checkpoints of the
workdir, each with a record that names the source file and its sha256. `train.py` and `evaluate.py --grid`
with a `weights.source = 'torch'` config import them the same way when the workdir has none.

Layer by layer (PyTorch -> Flax): Conv2d weights (out, in, kH, kW) -> (kH, kW, in, out); ConvTranspose2d
weights (in, out, kH, kW) -> (kH, kW, in, out) flipped in both spatial axes (Flax `ConvTranspose` with
`transpose_kernel=False` correlates where PyTorch convolves); Linear (out, in) -> (in, out), and the first
dense layer's inputs reordered from PyTorch's (C, H, W) flattening to Flax's (H, W, C). The authors'
quantiser flattens the latent in the `nchw_chunks` layout, and their classifier takes raw [0, 1] pixels
(classifier.input_mean = 0, input_std = 1): both are config fields, not folded into the weights.
"""

import dataclasses
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vqdefense_jax.core import classifier as classifier_lib
from vqdefense_jax.core import torch_pickle
from vqdefense_jax.core.config import require
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify.vqvae import VQVAE

SOURCES = ("train", "torch")
REPOSITORY = "https://github.com/noodles8436/Split-Defense-VAE"
# The published files (commit 49ee6d8f): path in the repository and sha256, checked before unpickling.
PUBLISHED = {
    "classifier": ("classifier_model/lenet_mnist_model.pth",
                   "b30e7c62288f30d2fffe082b9f4aa744a891abdb97e4d5f33835b450aa55ff3c"),
    "no_split": ("NoSplitted_VAE/VQ-VAE.pth", "8d104dcc5e4260360280e0a9cfff5e0461cbae251e2ad5b20f38380423d850d7"),
    "split": ("Splitted_VAE/VQ-VAE.pth", "7f7c5d83609c6fa1c83ceb26bf6d996f039e93661371442ffc828d41ae14efc8"),
}


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
  """The `weights` section: train every model here, or import the authors' PyTorch weights."""
  source: str = "train"
  torch_dir: str = ""
  check_sha256: bool = True

  @classmethod
  def from_config(cls, section) -> "WeightsSpec":
    spec = cls(section.source, section.torch_dir, section.check_sha256)
    require(spec.source in SOURCES, f"weights.source must be one of {SOURCES}, not {spec.source!r}")
    require(spec.source == "train" or bool(spec.torch_dir),
            f"weights.source='torch' needs weights.torch_dir: a clone of {REPOSITORY}")
    return spec

  @property
  def imported(self) -> bool:
    return self.source == "torch"

  def path(self, which: str) -> str:
    return os.path.join(os.path.abspath(self.torch_dir), PUBLISHED[which][0])

  def sha256(self, which: str) -> str:
    """The digest the imported file must have: the published one, or (check_sha256 off) the file's own."""
    if self.check_sha256:
      return PUBLISHED[which][1]
    if not os.path.isfile(self.path(which)):
      raise VQDefenseError(f"{self.path(which)} not found: weights.torch_dir must be a clone of {REPOSITORY}")
    return torch_pickle.sha256_of(self.path(which))

  def state_dict(self, which: str) -> dict[str, np.ndarray]:
    path = self.path(which)
    if not os.path.isfile(path):
      raise VQDefenseError(f"{path} not found: weights.torch_dir ({self.torch_dir}) must be a clone of {REPOSITORY}")
    return torch_pickle.read_state_dict(path, self.sha256(which))

  def record(self, which: str) -> dict[str, str]:
    """What an imported checkpoint's record says about its source."""
    return dict(format="pytorch state dict", file=PUBLISHED[which][0], sha256=self.sha256(which))


# --- PyTorch layouts -> Flax ------------------------------------------------------------------------------

def conv(w_OxIxHxW: np.ndarray) -> np.ndarray:
  return np.transpose(w_OxIxHxW, (2, 3, 1, 0))


def conv_transpose(w_IxOxHxW: np.ndarray) -> np.ndarray:
  return np.transpose(w_IxOxHxW, (2, 3, 0, 1))[::-1, ::-1]


def dense(w_OxI: np.ndarray) -> np.ndarray:
  return np.transpose(w_OxI)


def _take(sd: dict[str, np.ndarray], path: str, mapping: dict[str, tuple[str, Any]], abstract) -> dict:
  """Flax params in the structure of `abstract` from the state dict, by `mapping` (flax path -> (name, convert)).

  The state dict must hold exactly the mapped names, each converting to the shape Flax expects.
  """
  missing = sorted(name for name, _ in mapping.values() if name not in sd)
  extra = sorted(set(sd) - {name for name, _ in mapping.values()})
  if missing or extra:
    raise VQDefenseError(f"{path}: " + "; ".join(
        part for part in (f"missing {', '.join(missing)}" if missing else "",
                          f"unexpected {', '.join(extra)}" if extra else "") if part)
                         + " (is this the state dict of the model the config describes?)")
  flat = {}
  for key, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    flax_path = "/".join(k.key for k in key)
    name, convert = mapping[flax_path]
    value = np.asarray(convert(sd[name]), np.float32)
    if value.shape != leaf.shape:
      raise VQDefenseError(f"{path}: {name} has shape {sd[name].shape}, which gives {value.shape} for {flax_path}; "
                           f"the config's model needs {leaf.shape}")
    flat[flax_path] = jnp.asarray(np.ascontiguousarray(value))
  return jax.tree_util.tree_map_with_path(lambda key, _: flat["/".join(k.key for k in key)], abstract)


def classifier_params(sd: dict[str, np.ndarray], model: classifier_lib.Classifier, image_size: int,
                      path: str = "classifier") -> Any:
  """The authors' classifier (conv1, conv2, fc1, fc2: the PyTorch MNIST example) as `model`'s params."""
  abstract = jax.eval_shape(lambda: classifier_lib.init_params(0, image_size, model))
  side = (image_size - 4) // 2  # two VALID 3×3 convs, then 2×2 max pooling

  def fc1(w):  # inputs flattened (C, H, W) by PyTorch, (H, W, C) by Flax
    if w.ndim != 2 or w.shape[1] != 64 * side * side:
      return w
    return w.reshape(w.shape[0], 64, side, side).transpose(2, 3, 1, 0).reshape(-1, w.shape[0])

  keep = lambda w: w
  mapping = {"Conv_0/kernel": ("conv1.weight", conv), "Conv_0/bias": ("conv1.bias", keep),
             "Conv_1/kernel": ("conv2.weight", conv), "Conv_1/bias": ("conv2.bias", keep),
             "Dense_0/kernel": ("fc1.weight", fc1), "Dense_0/bias": ("fc1.bias", keep),
             "Dense_1/kernel": ("fc2.weight", dense), "Dense_1/bias": ("fc2.bias", keep)}
  return _take(sd, path, mapping, abstract)


def vqvae_variables(sd: dict[str, np.ndarray], model: VQVAE, codebook_size: int, path: str = "vqvae") -> dict:
  """The authors' VQ-VAE (encoder / codebook / decoder, EMA codebook) as `model`'s variables."""
  if model.layout != "nchw_chunks":
    raise VQDefenseError(f"{path}: the authors' VQ-VAE quantises its latent in the 'nchw_chunks' layout; "
                         f"vqvae.layout={model.layout!r} would compute something else with these weights")
  k = np.shape(sd["codebook.embedding"])[0] if "codebook.embedding" in sd else codebook_size  # else: `_take` names it
  if k != codebook_size:
    raise VQDefenseError(f"{path}: its codebook has {k} codes but the config asks for {codebook_size} "
                         "(vqvae.codebook_sizes)")
  side = 4 * model.embedding_dim  # any input side that round-trips and fills whole code vectors
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, side, side, 1)), codebook_size))
  keep = lambda w: w
  mapping = {}
  for i, name in enumerate(("strided_conv_1", "strided_conv_2")):
    mapping[f"encoder/Conv_{i}/kernel"] = (f"encoder.{name}.weight", conv)
    mapping[f"encoder/Conv_{i}/bias"] = (f"encoder.{name}.bias", keep)
  for part in ("encoder", "decoder"):
    for i in range(2):
      mapping[f"{part}/Residual_{i}/Conv_0/kernel"] = (f"{part}.residual_conv_{i + 1}.weight", conv)
      mapping[f"{part}/Residual_{i}/Conv_0/bias"] = (f"{part}.residual_conv_{i + 1}.bias", keep)
  for i in range(2):
    mapping[f"decoder/ConvTranspose_{i}/kernel"] = (f"decoder.strided_t_conv_{i + 1}.weight", conv_transpose)
    mapping[f"decoder/ConvTranspose_{i}/bias"] = (f"decoder.strided_t_conv_{i + 1}.bias", keep)
  pad = lambda w: np.concatenate([w, np.zeros((model.k_max - len(w),) + w.shape[1:], w.dtype)])
  mapping.update({"embedding": ("codebook.embedding", pad), "ema_w": ("codebook.ema_weight", pad),
                  "ema_count": ("codebook.ema_count", pad)})
  codebook = {k: v for k, v in abstract["codebook"].items() if k != "size"}
  out = _take(sd, path, mapping, dict(abstract["params"], **codebook))
  return {"params": {part: out[part] for part in abstract["params"]},
          "codebook": dict({k: out[k] for k in codebook}, size=jnp.asarray(codebook_size, jnp.int32))}


USAGE = """Import the paper authors' PyTorch weights into a workdir (no PyTorch needed).

  python -m vqdefense_jax.purify.interop import-torch --config configs/purify/authors.py --workdir runs/authors
  ... --config.weights.torch_dir=PATH     # a clone of noodles8436/Split-Defense-VAE elsewhere
  ... --retrain                           # replace checkpoints in the workdir that another config made

The config must set weights.source = 'torch'. Writes the classifier and both VQ-VAEs as checkpoints (each
with record.json naming its source file and sha256) and logs their clean test metrics.
"""


def main(argv: list[str]) -> int:
  from vqdefense_jax.core import cli  # pylint: disable=g-import-not-at-top
  cli.setup_logging()

  def go():
    if not argv or argv[0] != "import-torch":
      raise VQDefenseError("usage: python -m vqdefense_jax.purify.interop import-torch --config FILE "
                           "[--workdir DIR] [--retrain]")
    args = cli.parse(argv[1:], USAGE, cli.RETRAIN)
    from vqdefense_jax.core import files  # pylint: disable=g-import-not-at-top
    from vqdefense_jax.purify import experiment  # pylint: disable=g-import-not-at-top
    exp = experiment.Experiment.from_config(args.config)
    if not exp.weights.imported:
      raise VQDefenseError("import-torch needs a config with weights.source='torch' (configs/purify/authors.py)")
    with files.locked(files.prepare_workdir(args.workdir)) as workdir:
      experiment.train_all(exp, workdir, retrain=args.switches["retrain"])
    print(f"imported; checkpoints under {workdir}")

  return cli.run(go)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
