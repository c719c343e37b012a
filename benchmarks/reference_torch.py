"""PyTorch reference benchmark: the established PyTorch attack libraries on the paper authors' models.

Runs, on the same machine as the JAX attacks, the reference implementations of
- PGD (Madry et al. 2018) from torchattacks 3.5.1;
- Square Attack (Andriushchenko et al. 2020) and AutoAttack (Croce & Hein 2020) from the AutoAttack authors'
  repository (fra31/auto-attack, imported as the `autoattack` package, never copied),
against the paper authors' classifier and their No-Split and 4-Split VQ-VAEs (768 codes), rebuilt here as
nn.Modules that load their state dicts unchanged (`--check` compares them with `reference_outputs.npz`).

It needs PyTorch, which the project's venv does not have: `benchmarks/side_by_side.sh` builds a throwaway venv,
writes the benchmark images with the project's own data loader (the first N MNIST test images at 24×24) and
runs this script, passing its arguments on:

  bash benchmarks/side_by_side.sh --check                        # models vs reference_outputs.npz (max abs diff)
  bash benchmarks/side_by_side.sh --workload pgd                 # benchmarks/attack_speed.py's workload: 500 images,
                                                                 #   ε = 0.1, 0.2, 0.3, grey-box / BPDA / STE PGD
  bash benchmarks/side_by_side.sh --workload square              # Square, 5000 queries, 100 images, ε = 0.1
  bash benchmarks/side_by_side.sh --workload autoattack          # standard AutoAttack (STE gradient), 100 images
  bash benchmarks/side_by_side.sh --workload autoattack --gradient bpda
  bash benchmarks/side_by_side.sh --workload square --num-images 20 --queries 500 --purifiers none,split

or by hand in that venv (the images file is what side_by_side.sh writes):

  $REF_VENV/bin/python benchmarks/reference_torch.py --images /tmp/vqdefense_ref_images_500.npz --workload pgd

Threat models, as forward functions of x returning logits (the JAX attacks' names):
- grey-box (`pgd`): the attack differentiates classifier(x) only; the result is then purified and classified;
- `bpda_*`: forward classifier(p(x)), backward as if p were the identity: classifier(x + (p(x) - x).detach());
- `ste_*` (and AutoAttack's default `--gradient ste`): the true gradient of classifier(p(x)), the quantiser
  passing it straight through (z + (q - z).detach());
- Square is gradient-free and queries classifier(p(x)).
Accuracies count an image as correct when classifier(p(x_adv)) predicts its label, over all N images (the
project's `final` rule; Square and AutoAttack leave misclassified clean images alone, so they count as wrong).

Timing: time.perf_counter around each attack with its final classification (grey-box PGD: the attack once, then
each purifier's classification), after the models are loaded and checked, the attack library imported and one
forward and backward pass of each model run on one batch (warm-up); torch.set_num_threads(--threads, default
os.cpu_count()). Two threads slow down badly (up to 30× here) when other jobs share the two cores, so the script
records the share of CPU time other processes took just before and during the run, and warns above 5%. Prints
one human-readable line per run and, last, one JSON line with the record (seconds per attack/purifier summed
over ε, accuracies per ε, AutoAttack's accuracy after each member and its warnings).
"""

import argparse
import datetime
import hashlib
import importlib
import json
import os
import platform
import re
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_AUTHORS = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "authors"))

# The authors' published files (noodles8436/Split-Defense-VAE, commit 49ee6d8f) and their sha256, checked before
# torch.load (which, with weights_only=True, also refuses anything but tensors).
WEIGHTS = {
    "classifier": ("classifier_model/lenet_mnist_model.pth",
                   "b30e7c62288f30d2fffe082b9f4aa744a891abdb97e4d5f33835b450aa55ff3c"),
    "no_split": ("NoSplitted_VAE/VQ-VAE.pth", "8d104dcc5e4260360280e0a9cfff5e0461cbae251e2ad5b20f38380423d850d7"),
    "split": ("Splitted_VAE/VQ-VAE.pth", "7f7c5d83609c6fa1c83ceb26bf6d996f039e93661371442ffc828d41ae14efc8"),
}
IMAGE_SIZE = 24
CHECK_TOLERANCE = 1e-4
PURIFIERS = ("none", "no_split", "split")
# Per workload: images, ε, images per attack call. For pgd, 500 ran fastest of 100, 250 and 500 on the 2-core CPU
# (2026-12-07, while other jobs shared it: one ε took 200, 130 and 102 s); square and autoattack take ≤ 500 at once.
DEFAULTS = {
    "pgd": dict(num_images=500, eps=(0.1, 0.2, 0.3), batch=500),
    "square": dict(num_images=100, eps=(0.1,), batch=500),
    "autoattack": dict(num_images=100, eps=(0.1,), batch=500),
}


# --- The authors' models ------------------------------------------------------------------------------------

class Classifier(nn.Module):
  """The PyTorch MNIST example's network on 24×24 raw [0, 1] pixels (no normalisation)."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 32, 3)
    self.conv2 = nn.Conv2d(32, 64, 3)
    self.dropout1 = nn.Dropout(0.25)  # no parameters; off in eval mode
    self.dropout2 = nn.Dropout(0.5)
    self.fc1 = nn.Linear(64 * 10 * 10, 128)
    self.fc2 = nn.Linear(128, 10)

  def forward(self, x):
    x = F.relu(self.conv2(F.relu(self.conv1(x))))
    x = self.dropout1(F.max_pool2d(x, 2))
    x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
    return self.fc2(x)


class Encoder(nn.Module):
  """conv4×4/2 → conv4×4/2 → ReLU → residual 3×3 → ReLU → residual 1×1, where a residual block on the ReLU'd
  input h is h + conv(h)."""

  def __init__(self, channels=128):
    super().__init__()
    self.strided_conv_1 = nn.Conv2d(1, channels, 4, stride=2, padding=1)
    self.strided_conv_2 = nn.Conv2d(channels, channels, 4, stride=2, padding=1)
    self.residual_conv_1 = nn.Conv2d(channels, channels, 3, padding=1)
    self.residual_conv_2 = nn.Conv2d(channels, channels, 1)

  def forward(self, x):
    h = F.relu(self.strided_conv_2(self.strided_conv_1(x)))
    h = h + self.residual_conv_1(h)
    h = F.relu(h)
    return h + self.residual_conv_2(h)


class Decoder(nn.Module):
  """residual 1×1 → ReLU → residual 3×3 → ReLU → convT 2×2/2 → convT 2×2/2 (one channel); no output clamp."""

  def __init__(self, channels=128):
    super().__init__()
    self.residual_conv_1 = nn.Conv2d(channels, channels, 1)
    self.residual_conv_2 = nn.Conv2d(channels, channels, 3, padding=1)
    self.strided_t_conv_1 = nn.ConvTranspose2d(channels, channels, 2, stride=2)
    self.strided_t_conv_2 = nn.ConvTranspose2d(channels, 1, 2, stride=2)

  def forward(self, z):
    h = z + self.residual_conv_1(z)
    h = F.relu(h)
    h = h + self.residual_conv_2(h)
    return self.strided_t_conv_2(self.strided_t_conv_1(F.relu(h)))


class Codebook(nn.Module):
  """Nearest-code quantiser in the authors' layout, with the straight-through estimator.

  The (B, D, H, W) latent is cut, as laid out in memory (NCHW, row-major), into rows of D values, so one code
  vector holds pieces of several channels' maps; the nearest code by squared distance replaces each row and the
  rows are put back the same way. The EMA buffers are loaded (so the state dict matches) but unused.
  """

  def __init__(self, num_codes=768, dim=128):
    super().__init__()
    self.dim = dim
    self.register_buffer("embedding", torch.zeros(num_codes, dim))
    self.register_buffer("ema_count", torch.zeros(num_codes))
    self.register_buffer("ema_weight", torch.zeros(num_codes, dim))

  def forward(self, z):
    flat = z.contiguous().view(-1, self.dim)
    with torch.no_grad():  # the choice of code has no gradient
      e = self.embedding
      dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None]
      q = e[dist.argmin(1)]
    # Straight-through: the value of q, the gradient of the identity (as in the JAX port and the authors' code).
    return (flat + (q - flat).detach()).view(z.shape)


class VQVAE(nn.Module):
  def __init__(self):
    super().__init__()
    self.encoder = Encoder()
    self.codebook = Codebook()
    self.decoder = Decoder()

  def forward(self, x):
    return self.decoder(self.codebook(self.encoder(x)))


class Purifier(nn.Module):
  """x → VQ-VAE reconstruction, of the whole image (tiles=1, No-Split) or of each of tiles×tiles square tiles,
  reassembled (tiles=2, 4-Split: tile (i, j) is rows 12i…12i+11, columns 12j…12j+11)."""

  def __init__(self, vqvae, tiles):
    super().__init__()
    self.vqvae = vqvae
    self.tiles = tiles

  def forward(self, x):
    if self.tiles == 1:
      return self.vqvae(x)
    b, c, h, w = x.shape
    k = self.tiles
    t = x.reshape(b, c, k, h // k, k, w // k).permute(0, 2, 4, 1, 3, 5).reshape(b * k * k, c, h // k, w // k)
    r = self.vqvae(t)
    return r.reshape(b, k, k, c, h // k, w // k).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


class Defended(nn.Module):
  """Logits of classifier(p(x)), with the gradient an attack follows.

  gradient 'ste': the true gradient of classifier(p(x)) (the quantiser straight-through);
  'bpda': forward classifier(p(x)), backward as if p were the identity (Athalye et al. 2018).
  With no purifier it is the classifier itself.
  """

  def __init__(self, classifier, purifier=None, gradient="ste"):
    super().__init__()
    if gradient not in ("ste", "bpda"):
      raise ValueError(f"gradient must be 'ste' or 'bpda', not {gradient!r}")
    self.classifier = classifier
    self.purifier = purifier
    self.gradient = gradient

  def forward(self, x):
    if self.purifier is None:
      return self.classifier(x)
    if self.gradient == "bpda":
      with torch.no_grad():
        px = self.purifier(x)
      return self.classifier(x + (px - x).detach())
    return self.classifier(self.purifier(x))


def _state_dict(authors_dir, which):
  rel, digest = WEIGHTS[which]
  path = os.path.join(authors_dir, rel)
  with open(path, "rb") as f:
    got = hashlib.sha256(f.read()).hexdigest()
  if got != digest:
    sys.exit(f"{path}: sha256 {got}, expected {digest} (the authors' published file); refusing to load it")
  return torch.load(path, map_location="cpu", weights_only=True)


def load_models(authors_dir):
  """{'classifier': Classifier, 'no_split': Purifier, 'split': Purifier}, in eval mode, without gradients on
  their parameters (attacks differentiate with respect to the input only)."""
  classifier = Classifier()
  classifier.load_state_dict(_state_dict(authors_dir, "classifier"))
  models = dict(classifier=classifier)
  for name, tiles in (("no_split", 1), ("split", 2)):
    vq = VQVAE()
    vq.load_state_dict(_state_dict(authors_dir, name))
    models[name] = Purifier(vq, tiles)
  for m in models.values():
    m.eval()
    m.requires_grad_(False)
  return models


def defended(models, purifier, gradient="ste"):
  return Defended(models["classifier"], None if purifier == "none" else models[purifier], gradient).eval()


# --- Checks ---------------------------------------------------------------------------------------------------

def check_models(models, authors_dir):
  """Max abs differences against reference_outputs.npz (PyTorch on the first 32 test images); exits if any
  exceeds CHECK_TOLERANCE."""
  ref = np.load(os.path.join(authors_dir, "reference_outputs.npz"))
  x = torch.from_numpy(ref["x_24"])[:, None]
  with torch.no_grad():
    cls, no_split, split = models["classifier"], models["no_split"], models["split"]
    r_n, r_s = no_split(x), split(x)
    ours = dict(logits=cls(x), recon_no_split=r_n, recon_split=r_s, logits_no_split=cls(r_n),
                logits_split=cls(r_s), recon_vae_to_split=no_split(r_s), recon_split_to_vae=split(r_n))
  diffs = {}
  for key, value in ours.items():
    value = value.numpy().reshape(ref[key].shape)
    diffs[key] = float(np.abs(value - ref[key]).max())
    print(f"check {key:<20} max |torch - reference| = {diffs[key]:.3g}")
  bad = {k: v for k, v in diffs.items() if not v <= CHECK_TOLERANCE}
  if bad:
    sys.exit(f"check failed (tolerance {CHECK_TOLERANCE}): {bad}")
  print(f"check passed: every difference <= {CHECK_TOLERANCE}")
  return diffs


def load_images(path, n, authors_dir):
  """The first n images (n, 1, 24, 24) and labels of an .npz with 'images' (N, 24, 24) float32 in [0, 1] and
  'labels' (N,); the first ones must equal reference_outputs.npz's x_24 and labels."""
  with np.load(path) as f:
    images, labels = f["images"], f["labels"]
  if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
    sys.exit(f"{path}: images must be (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {images.shape}")
  if n > len(images):
    sys.exit(f"{path} holds {len(images)} images, fewer than --num-images {n}")
  ref = np.load(os.path.join(authors_dir, "reference_outputs.npz"))
  m = min(len(images), len(ref["x_24"]))
  diff = float(np.abs(images[:m] - ref["x_24"][:m]).max())
  same_labels = bool(np.array_equal(labels[:m], ref["labels"][:m]))
  print(f"images: {path}, first {m} vs reference_outputs.npz x_24: max abs diff {diff:.3g}, "
        f"labels equal: {same_labels}")
  if diff > 1e-5 or not same_labels:
    sys.exit("the benchmark images are not the project's 24×24 MNIST test images")
  x = torch.from_numpy(np.ascontiguousarray(images[:n], np.float32))[:, None]
  return x, torch.from_numpy(np.asarray(labels[:n], np.int64))


# --- Workloads --------------------------------------------------------------------------------------------------

def batches(n, batch):
  return [slice(i, min(i + batch, n)) for i in range(0, n, batch)]


def correct(model, x, y, batch):
  """Whether model(x) predicts y, per image (bool tensor)."""
  with torch.no_grad():
    return torch.cat([model(x[s]).argmax(1) == y[s] for s in batches(len(x), batch)])


class Record:
  """Seconds per (attack, purifier), summed over ε, and accuracies per (attack, purifier, ε)."""

  def __init__(self):
    self.seconds, self.accuracy, self.extra = {}, {}, {}

  def add_seconds(self, attack, purifier, eps, seconds):
    key = f"{attack}/{purifier}"
    self.seconds[key] = round(self.seconds.get(key, 0.0) + seconds, 2)
    self._line(attack, purifier, eps, "(x_adv for every purifier)", seconds)

  def add(self, attack, purifier, eps, seconds, ok):
    key = f"{attack}/{purifier}"
    self.seconds[key] = round(self.seconds.get(key, 0.0) + seconds, 2)
    acc = float(ok.float().mean())
    self.accuracy.setdefault(key, {})[f"{eps:g}"] = round(acc, 4)
    self._line(attack, purifier, eps, f"accuracy {acc:.3f} ({int(ok.sum())}/{len(ok)})", seconds)

  @staticmethod
  def _line(attack, purifier, eps, result, seconds):
    print(f"{attack:<10} {purifier:<9} eps={eps:<5g} {result:<28} {seconds:8.2f} s", flush=True)


def run_pgd(models, x, y, args, rec):
  """benchmarks/attack_speed.py's workload: torchattacks.PGD, 10 steps of 0.25·ε from a uniform random start.

  (a) grey-box: PGD against the classifier alone, then classifier(p(x_adv)) for every p (one attack serves all);
  (b) BPDA-PGD and (c) straight-through PGD against each purifier."""
  import torchattacks  # pylint: disable=import-outside-toplevel

  def attack(model, eps):
    torch.manual_seed(args.seed)  # the random start; the same for every (attack, purifier, ε)
    pgd = torchattacks.PGD(model, eps=eps, alpha=0.25 * eps, steps=10, random_start=True)
    return torch.cat([pgd(x[s], y[s]) for s in batches(len(x), args.batch)])

  white_box = [p for p in args.purifiers if p != "none"]
  for eps in args.eps:
    # Grey-box: one x_adv serves every purifier; its generation is timed as 'pgd/attack' and each
    # purifier's classification of it as 'pgd/<purifier>'.
    t0 = time.perf_counter()
    x_adv = attack(models["classifier"], eps)
    rec.add_seconds("pgd", "attack", eps, time.perf_counter() - t0)
    _check_ball(x_adv, x, eps)
    for p in args.purifiers:
      t0 = time.perf_counter()
      ok = correct(defended(models, p), x_adv, y, args.batch)
      rec.add("pgd", p, eps, time.perf_counter() - t0, ok)
    for name, gradient in (("bpda_pgd", "bpda"), ("ste_pgd", "ste")):
      for p in white_box:
        t0 = time.perf_counter()
        x_adv = attack(defended(models, p, gradient), eps)
        ok = correct(defended(models, p), x_adv, y, args.batch)
        rec.add(name, p, eps, time.perf_counter() - t0, ok)
        _check_ball(x_adv, x, eps)


def run_square(models, x, y, args, rec):
  """The AutoAttack repository's Square Attack (margin loss, p_init 0.8, one restart, rescaled schedule)."""
  from autoattack.square import SquareAttack  # pylint: disable=import-outside-toplevel

  for p in args.purifiers:
    model = defended(models, p)
    for eps in args.eps:
      torch.manual_seed(args.seed)
      square = SquareAttack(model, norm="Linf", n_queries=args.queries, eps=eps, p_init=0.8, n_restarts=1,
                            seed=args.seed, loss="margin", resc_schedule=True, device="cpu")
      t0 = time.perf_counter()
      with torch.no_grad():
        x_adv = torch.cat([square.perturb(x[s], y[s]) for s in batches(len(x), args.batch)])
        ok = correct(model, x_adv, y, args.batch)
      rec.add("square", p, eps, time.perf_counter() - t0, ok)
      _check_ball(x_adv, x, eps)


AA_ACCURACY = re.compile(r"(initial accuracy|robust accuracy after (\S+)): ([\d.]+)%")


def run_autoattack(models, x, y, args, rec):
  """Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) against classifier(p(x)) with the --gradient forward.

  AutoAttack prints its accuracy after each member; those lines are captured (the shared logger's `log`, also
  used by its checks for randomised, dynamic and gradient-masked models) and recorded member by member."""
  from autoattack import AutoAttack  # pylint: disable=import-outside-toplevel

  for p in args.purifiers:
    model = defended(models, p, args.gradient)
    for eps in args.eps:
      torch.manual_seed(args.seed)
      # seed: AutoAttack's default (None) seeds each member with the time; a fixed one makes runs repeatable.
      aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=args.seed, device="cpu")
      aa.square.n_queries = args.queries  # 5000 by default: the standard version's
      lines = []
      log = aa.logger.log

      def capture(line, log=log, lines=lines):
        lines.append(str(line))
        log(line)

      aa.logger.log = capture
      t0 = time.perf_counter()
      x_adv = aa.run_standard_evaluation(x, y, bs=args.batch)
      ok = correct(model, x_adv, y, args.batch)
      seconds = time.perf_counter() - t0
      members = {}
      for line in lines:
        m = AA_ACCURACY.search(line)
        if m:
          members["clean" if m.group(2) is None else m.group(2).lower()] = round(float(m.group(3)) / 100, 4)
      flagged = [line for line in lines if line.startswith("Warning")]  # e.g. its check on Square's success
      rec.add(f"aa_{args.gradient}", p, eps, seconds, ok)
      rec.extra.setdefault("autoattack_members", {}).setdefault(f"aa_{args.gradient}/{p}", {})[f"{eps:g}"] = members
      if flagged:
        rec.extra.setdefault("autoattack_warnings", {})[f"aa_{args.gradient}/{p}/{eps:g}"] = flagged
      _check_ball(x_adv, x, eps)


def _check_ball(x_adv, x, eps):
  """The attacks' outputs must lie in [0, 1] and the ε-ball (with float slack)."""
  dist = float((x_adv - x).abs().max())
  if dist > eps + 1e-5 or float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
    sys.exit(f"x_adv leaves the ε-ball or [0, 1]: max |x_adv - x| = {dist}, ε = {eps}")


def _busy_cpu_seconds():
  """CPU seconds all processes have spent busy since boot (from /proc/stat), or None where there is none."""
  try:
    with open("/proc/stat") as f:
      v = [int(t) for t in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait (guest is in user)


def others_cpu_share(since_busy, since_own, since_wall):
  """The share of the machine's CPU time that other processes used since the three readings (busy CPU seconds,
  this process's CPU seconds, perf_counter), or None where /proc/stat is missing."""
  busy = _busy_cpu_seconds()
  if busy is None or since_busy is None:
    return None
  own = sum(os.times()[:4]) - since_own
  wall = time.perf_counter() - since_wall
  return round(max(busy - since_busy - own, 0.0) / max(wall * os.cpu_count(), 1e-9), 3)


def cpu_readings():
  return _busy_cpu_seconds(), sum(os.times()[:4]), time.perf_counter()


def warm_up(models, x, y):
  """One forward and backward pass of every model variant on one batch, before timing: PyTorch's first call at
  a new shape sets up its kernels (attack_speed.py likewise reports JAX's compile time apart)."""
  for p in PURIFIERS:
    for gradient in ("ste",) if p == "none" else ("ste", "bpda"):
      xx = x.clone().requires_grad_(True)
      torch.autograd.grad(F.cross_entropy(defended(models, p, gradient)(xx), y), xx)


WORKLOADS = dict(pgd=run_pgd, square=run_square, autoattack=run_autoattack)
LIBRARIES = dict(pgd="torchattacks", square="autoattack.square", autoattack="autoattack")


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--check", action="store_true", help="only compare the models with reference_outputs.npz")
  p.add_argument("--workload", choices=sorted(WORKLOADS), default="pgd", help="(default: %(default)s)")
  p.add_argument("--images", help=".npz with 'images' (N, 24, 24) float32 and 'labels' (N,), as side_by_side.sh "
                 "writes them")
  p.add_argument("--authors", default=DEFAULT_AUTHORS, help="the authors' weights (default: %(default)s)")
  p.add_argument("--num-images", type=int, help="first N images (default: pgd 500, square 100, autoattack 100)")
  p.add_argument("--eps", help="comma-separated ε in pixel units (default: pgd 0.1,0.2,0.3, others 0.1)")
  p.add_argument("--batch", type=int, help="images per attack call (default: 500)")
  p.add_argument("--purifiers", help=f"comma-separated, from {','.join(PURIFIERS)} (default: all; 'none' is the "
                 "undefended classifier, and for pgd only takes the grey-box attack)")
  p.add_argument("--queries", type=int, default=5000, help="Square's query budget (default: %(default)s)")
  p.add_argument("--gradient", choices=("ste", "bpda"), default="ste", help="AutoAttack's gradient through the "
                 "purifier (default: %(default)s)")
  p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: %(default)s)")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()

  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  models = load_models(args.authors)
  diffs = check_models(models, args.authors)
  if args.check:
    return
  if not args.images:
    p.error("--images is required for a workload (side_by_side.sh writes it)")
  d = DEFAULTS[args.workload]
  args.num_images = args.num_images or d["num_images"]
  args.eps = tuple(float(v) for v in args.eps.split(",")) if args.eps else d["eps"]
  args.batch = args.batch or d["batch"]
  args.purifiers = tuple(args.purifiers.split(",")) if args.purifiers else PURIFIERS
  if not set(args.purifiers) <= set(PURIFIERS):
    p.error(f"--purifiers must be among {PURIFIERS}")
  x, y = load_images(args.images, args.num_images, args.authors)
  clean = {q: round(float(correct(defended(models, q), x, y, args.batch).float().mean()), 4) for q in PURIFIERS}
  print(f"workload {args.workload}: {len(x)} images, eps {args.eps}, batch {args.batch}, threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}; clean accuracy {clean}", flush=True)

  importlib.import_module(LIBRARIES[args.workload])  # imported (and so loaded) before the clock starts
  warm_up(models, x[:args.batch], y[:args.batch])
  # Other jobs on the machine skew the times badly (two torch threads on two shared cores wait on each other):
  # how much CPU time they took, just before and during the workload, goes into the record.
  readings = cpu_readings()
  time.sleep(1.0)
  others_before = others_cpu_share(*readings)
  rec = Record()
  readings = cpu_readings()
  t0 = time.perf_counter()
  WORKLOADS[args.workload](models, x, y, args, rec)
  total = time.perf_counter() - t0
  others = others_cpu_share(*readings)
  print(f"total {total:.1f} s")
  if others is not None and max(others, others_before) > 0.05:
    print(f"warning: other processes used {others:.0%} of the CPUs during the run ({others_before:.0%} just "
          "before): these times are not comparable with an idle machine's")

  versions = dict(torch=torch.__version__, python=platform.python_version())
  if args.workload == "pgd":
    import torchattacks  # pylint: disable=import-outside-toplevel
    versions["torchattacks"] = torchattacks.__version__
  else:
    versions["autoattack"] = os.environ.get("AUTOATTACK_REV", "unknown")
  out = dict(date=datetime.date.today().isoformat(), machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
             others_cpu_share=dict(before=others_before, during=others),
             versions=versions, threads=torch.get_num_threads(), workload=args.workload, num_images=len(x),
             eps=list(args.eps), batch=args.batch, seed=args.seed, total_s=round(total, 2),
             seconds=rec.seconds, accuracy=rec.accuracy, clean_accuracy=clean,
             check_max_abs_diff={k: float(f"{v:.3g}") for k, v in diffs.items()}, **rec.extra)
  if args.workload == "square":
    out["queries"] = args.queries
  if args.workload == "autoattack":
    out["gradient"] = args.gradient
  print(json.dumps(out))


if __name__ == "__main__":
  main()
