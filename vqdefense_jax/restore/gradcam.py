"""Grad-CAM (Selvaraju et al., ICCV 2017) of any Flax model's layers, and how much of it lands in a region.

For a score s (one number per example) and a layer's output A of shape (h, w, K):
  α_k  = (1 / hw) Σ_ij ∂s/∂A_ijk                  the channel weights: gradients, global-average-pooled
  L    = ReLU(Σ_k α_k A_k)                         (h, w), then resized to the image (bilinear)
The layers are named by their module path in the model ('block_0', or 'Conv_1' for the classifier's last
convolution). Their outputs are read, and their gradients taken, through Flax's method interceptor: a zero
tensor is added to each named output, and the gradient of the score with respect to it is ∂s/∂A. The model's
code is not touched (no `perturb` calls in it), and its values are unchanged.

The restorer (the document, Sec. 2.2): restoration is turned into classification by scoring G's output with D,
s(x) = mean over patches of D(G(x)) (the logit of 'real'), and Grad-CAM is taken at every CBAM layer of G (the
residual blocks' outputs, after CBAM). The classifier: s = the logit of a given class, at its last convolution
(pre-ReLU output of 'Conv_1').

`concentration` puts a number on the document's claim that attention lands on the de-identified region:
  ratio = (Σ_box L / Σ L) / (|box| / |image|)
the share of the map's mass inside the box divided by the box's share of the image: 1 when the map is as dense
inside as outside, above 1 when it concentrates there. It is undefined (NaN) where the map is zero everywhere.
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqdefense_jax.restore import gan


def layer_gradients(apply_fn: Callable[[jax.Array], jax.Array], names: tuple[str, ...], x: jax.Array,
                    score_fn: Callable[[jax.Array], jax.Array]) -> tuple[dict, dict, jax.Array]:
  """The outputs A and gradients ∂s/∂A of the modules at paths `names` ('a/b' for nested ones) inside
  `apply_fn(x)`, and the scores s_B = score_fn(apply_fn(x)). Examples must be independent (no batch statistics):
  the gradient of Σ_b s_b is then each example's own."""

  def forward(deltas):
    acts = {}

    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      module = context.module
      if context.method_name == "__call__" and module.scope is not None:
        path = "/".join(module.scope.path)
        if path in names:
          acts[path] = out
          if deltas is not None:
            out = out + deltas[path]
      return out

    with nn.intercept_methods(interceptor):
      out = apply_fn(x)
    score_B = score_fn(out)  # outside the interceptor: the scoring model's modules are not looked at
    return jnp.sum(score_B), (acts, score_B)

  shapes = jax.eval_shape(lambda: forward(None)[1][0])
  missing = sorted(set(names) - set(shapes))
  if missing:
    raise ValueError(f"no module at {', '.join(missing)} in the model (found {', '.join(sorted(shapes)) or 'none'})")
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  grads, (acts, score_B) = jax.grad(forward, has_aux=True)(zeros)
  return acts, grads, score_B


def cam(a_BxHxWxK: jax.Array, g_BxHxWxK: jax.Array) -> jax.Array:
  """ReLU(Σ_k α_k A_k) with α_k the spatial mean of ∂s/∂A_k: (B, h, w)."""
  alpha_BxK = g_BxHxWxK.mean(axis=(1, 2))
  return jax.nn.relu(jnp.einsum("bhwk,bk->bhw", a_BxHxWxK, alpha_BxK))


def resize(cam_BxHxW: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """A map resized to the image (bilinear), kept >= 0."""
  return jnp.maximum(jax.image.resize(cam_BxHxW, cam_BxHxW.shape[:1] + tuple(hw), "bilinear"), 0.0)


def gradcam(apply_fn, names: tuple[str, ...], x_BxHxWxC: jax.Array, score_fn) -> tuple[jax.Array, jax.Array]:
  """Grad-CAM of every layer in `names` at the image's size: (B, L, H, W), and the scores (B,)."""
  acts, grads, score_B = layer_gradients(apply_fn, names, x_BxHxWxC, score_fn)
  maps = [resize(cam(acts[n], grads[n]), x_BxHxWxC.shape[1:3]) for n in names]
  return jnp.stack(maps, axis=1), score_B


@jax.jit
def restorer_gradcam(params: gan.RestorerParams, x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Grad-CAM of the restorer's CBAM layers (every residual block's output) for the score D(G(x)) (mean logit over
  patches): (B, blocks, H, W) maps and (B,) scores."""
  generator = params.nets.generator
  apply_fn = lambda x: generator.apply({"params": params.generator}, x)
  score_fn = lambda restored: gan.critic(params, restored).mean(axis=(1, 2))
  return gradcam(apply_fn, generator.layer_names, x_BxHxWxC, score_fn)


CLASSIFIER_LAYER = "Conv_1"  # the classifier's last convolution (core/classifier.py)


def classifier_gradcam(model: nn.Module, params, x_BxHxWxC: jax.Array, class_B: jax.Array,
                       layer: str = CLASSIFIER_LAYER) -> tuple[jax.Array, jax.Array]:
  """Grad-CAM of a classifier's `layer` for the logit of class_B: (B, H, W) maps and (B,) logits."""
  apply_fn = lambda x: model.apply({"params": params}, x)
  score_fn = lambda logits_BxK: jnp.take_along_axis(logits_BxK, class_B[:, None], axis=1)[:, 0]
  maps, score_B = gradcam(apply_fn, (layer,), x_BxHxWxC, score_fn)
  return maps[:, 0], score_B


def concentration(cam_BxHxW: jax.Array, mask_BxHxW: jax.Array) -> jax.Array:
  """(Σ_box L / Σ L) / (|box| / |image|) per example: (B,); NaN where the map or the box is empty."""
  total_B = cam_BxHxW.sum(axis=(1, 2))
  inside_B = (cam_BxHxW * mask_BxHxW).sum(axis=(1, 2))
  area_B = mask_BxHxW.mean(axis=(1, 2))
  ok = (total_B > 0) & (area_B > 0)
  return jnp.where(ok, inside_B / jnp.where(ok, total_B, 1.0) / jnp.where(ok, area_B, 1.0), jnp.nan)
