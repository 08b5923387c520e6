"""Image, mask and latent math as pure functions of tensors. Nothing here knows about nodes, models or the
engine beyond the tensors given; results stay on the device of their inputs, so the Stable Diffusion code
and the nodes compose them and the tests check them against independent references (PIL, numpy, loops,
whole-image runs).

Layouts are the node library's: IMAGE ``[B, H, W, C]`` in 0..1, MASK ``[B, H, W]`` in 0..1 (1 = selected),
latents ``[B, C, h, w]``. Modules, one job each:
  * ``checks``: input errors naming the node and input;
  * ``batch``: fitting batches; ``resize``; ``resample``: Lanczos resizing;
  * ``masks``: mask morphology, thresholds, feathering, compositing of masks;
  * ``compositing``: images and latents pasted through masks, padding, cropping;
  * ``crop_stitch``: the crop-and-stitch geometry of inpainting;
  * ``paste_masks``: Gaussian blur and the feathered/gradient paste masks of tiles, rendered on any window;
  * ``tiles``: overlapping tile grids, blending, tiled runs that shrink their tiles on out-of-memory;
  * ``redraw_plan``: the tile and seam-fix jobs of a tiled diffusion upscale.
"""
