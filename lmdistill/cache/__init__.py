"""Teacher-signal caches: run the teacher once (``lmdistill cache``), distil from its stored top-k signal many times."""

from lmdistill.cache.manifest import run_tokenizer_source
from lmdistill.cache.reader import TeacherCache
from lmdistill.cache.writer import build_teacher_cache

__all__ = ["TeacherCache", "build_teacher_cache", "run_tokenizer_source"]
