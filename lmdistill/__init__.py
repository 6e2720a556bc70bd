"""lmdistill: knowledge distillation for transformer language models."""

from lmdistill.version import __version__

__all__ = ["__version__", "distill"]


def distill(config, *, resume: bool = False, overrides=None, stop_after=None):
    """Distil a teacher into a student; see :func:`lmdistill.api.distill`."""
    from lmdistill.api import distill as run

    return run(config, resume=resume, overrides=overrides, stop_after=stop_after)
