"""Trained weights: every source a model loads from, and how each is read safely.

    errors.py        the `WeightsError` every weights problem raises (no JAX)
    loaded.py        `InferenceModel`, the one `assemble` of a model from stored arrays
    loading.py       the one loader: a shipped name, a checkpoint folder, an .npz or a PyTorch
                     file -> `InferenceModel`
    shipped.py       the shipped models: a name -> its verified file and manifest entry
    pretrained/      the shipped models' files and manifest (data)
    compact.py       the project's .npz format (no pickles)
    checkpoints.py   Orbax training checkpoints: save, resume, read back
    torch_io.py      PyTorch / safetensors files read without torch and without running code
    torch_import.py  published PyTorch state dicts -> this project's models, one row per family

The maintainers' tool that writes shipped models, `drsan_jax.pretrained`, sits above the loader.
"""
