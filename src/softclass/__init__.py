"""softclass: multi-class classification with PyTorch.

Exact softmax / cross-entropy (``softclass.functional``), drop-in modules (``softclass.nn``),
fused kernels (``softclass.kernels``) and the four classic output/loss designs, compared.
"""

from softclass.version import __version__

__all__ = ["Classifier", "__version__"]


def __getattr__(name: str):
    """``softclass.Classifier`` is imported on first use (scikit-learn loads only then)."""
    if name == "Classifier":
        from softclass.estimator import Classifier

        return Classifier
    raise AttributeError(f"module 'softclass' has no attribute {name!r}")
