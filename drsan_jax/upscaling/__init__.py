"""Upscaling pictures with any backend, without JAX: shapes, memory, tiles and picture kinds.

    shapes.py    the compile buckets and the smallest side a network is run at
    memory.py    how much memory a call may plan to use, and what a whole picture needs
    tiling.py    overlapping tiles, their cross-fade, and the tiled run in bands of rows
    pictures.py  grey / RGB / RGBA, 8 / 16 bits, and `PictureUpscaler`, which the JAX
                 `api.Upscaler` and the ONNX Runtime `onnx_runtime.OnnxUpscaler` extend

Nothing here imports JAX or Flax (an import-linter contract in pyproject.toml keeps it so), so a
deployment on ONNX Runtime needs only NumPy and this package's files.
"""
