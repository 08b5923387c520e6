"""Image, mask and latent math as pure functions of tensors: mask morphology and feathering, compositing,
padding and cropping, batch fitting, the crop-and-stitch geometry of inpainting. Nothing here knows about
nodes, models or devices beyond the tensors given (results stay where their inputs are).

Layouts are the node library's: IMAGE ``[B, H, W, C]`` in 0..1, MASK ``[B, H, W]`` in 0..1 (1 = selected),
latents ``[B, C, h, w]``. Modules, one job each: ``checks`` (input errors naming the node and input),
``batch`` (fitting batches), ``resize``, ``masks``, ``compositing``, ``crop_stitch``.
"""
