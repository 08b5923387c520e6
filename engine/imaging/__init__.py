"""Image math as pure functions of tensors: resampling, feathered masks, tile layouts and tiled runs.

Nothing here knows about models, nodes or the engine: every function takes tensors (and sizes) and
returns tensors on the device it was given, so the Stable Diffusion code and the nodes compose them and
the tests check them against independent references (PIL, whole-image runs).

Modules, one job each: ``resample`` (Lanczos resizing), ``masks`` (Gaussian blur, feathered and gradient
masks rendered on any window), ``tiles`` (overlapping tile grids, blending, tiled runs that shrink their
tiles on out-of-memory), ``redraw_plan`` (the tile and seam-fix jobs of a tiled diffusion upscale).
"""
