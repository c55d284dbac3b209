"""softclass: multi-class classification with PyTorch.

Exact softmax / cross-entropy (``softclass.functional``), drop-in modules (``softclass.nn``),
fused kernels (``softclass.kernels``) and the four classic output/loss designs, compared.
"""

__all__ = ["Classifier", "__version__"]


def __getattr__(name: str):
    """``softclass.Classifier`` and ``__version__`` are imported on first use: scikit-learn, and
    importlib.metadata (a third of ``softclass --help``'s start-up), load only then."""
    if name == "Classifier":
        from softclass.estimator import Classifier

        return Classifier
    if name == "__version__":
        from softclass.version import __version__

        return __version__
    raise AttributeError(f"module 'softclass' has no attribute {name!r}")
