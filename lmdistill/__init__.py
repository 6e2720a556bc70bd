"""lmdistill: knowledge distillation for transformer language models."""

__version__ = "0.1.0"


def distill(config, *, resume: bool = False, overrides=None, stop_after=None):
    """Distil a teacher into a student; see :func:`lmdistill.api.distill`."""
    from lmdistill.api import distill as run

    return run(config, resume=resume, overrides=overrides, stop_after=stop_after)
