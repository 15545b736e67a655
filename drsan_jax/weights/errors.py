"""`WeightsError`: what every weights problem raises, importable without JAX.

Every way a weights source can be wrong (missing, damaged, unsafe, not fitting its model) raises
it or a subclass, with a message that starts with the source. It lives apart from the loader so
that the light modules (the compact format, the PyTorch reader, the shipped manifest) and the
commands' argument checks can raise and catch it before JAX is imported.
"""


class WeightsError(ValueError):
    """Weights that cannot be loaded: missing, damaged, unsafe, or not fitting their model."""
