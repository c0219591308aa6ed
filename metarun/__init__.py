"""metarun: a config-driven experiment runner for meta-learning.

``metarun.load(checkpoint)`` gives a trained learner to adapt and predict with, ``metarun.run(overrides)``
runs what the ``metarun`` command runs (see ``metarun.api``)."""

__version__ = "0.1.0"


def load(path, device: str = "cpu", trust_checkpoint: bool = False):
    """The trained learner of a checkpoint or run dir: ``.adapt(images, labels)``, ``.predict(images)``."""
    from metarun.api import load as load_learner
    return load_learner(path, device, trust_checkpoint)


def run(overrides=(), run_dir=None):
    """Run ``metarun <overrides>`` in this process and return its results."""
    from metarun.api import run as run_overrides
    return run_overrides(overrides, run_dir)
