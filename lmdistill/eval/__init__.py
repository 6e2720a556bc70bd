"""Evaluation: pure metrics (``lmdistill.eval.metrics``) and runners over models (``lmdistill.eval.runner``)."""
