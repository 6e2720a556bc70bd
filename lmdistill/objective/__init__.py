"""The objective: a weighted sum of named loss terms over what the student and a teacher signal produced."""

from lmdistill.objective.compute import TeacherBatch, compute_terms, total_loss
from lmdistill.objective.features import Features, Masks, forward_features
from lmdistill.objective.terms import Needs, Term, build_terms, needs_of, projection_widths

__all__ = ["Features", "Masks", "Needs", "TeacherBatch", "Term", "build_terms", "compute_terms", "forward_features",
           "needs_of", "projection_widths", "total_loss"]
