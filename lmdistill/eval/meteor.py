"""METEOR (Banerjee & Lavie 2005) through nltk's implementation, with WordNet 3.0 for synonym matches.

WordNet is not on the package index. It is found, in order: ``$LMDISTILL_WORDNET`` (a WordNet dict dir), nltk's own
data (``nltk.download("wordnet")``), or Debian's ``wordnet-base`` package (``apt-get install wordnet-base``, files
under /usr/share/wordnet). Debian's copy lacks the ``lexnames`` table nltk's reader opens, so a reader dir is made
under ``~/.cache/lmdistill/wordnet`` with copies of Debian's files (nltk refuses links that leave its root) and that table (the 45 lexicographer files of
WordNet 3.0, as in lexnames(5WN)). Without WordNet, :func:`meteor` returns None and callers print one line.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

DEBIAN_WORDNET = Path("/usr/share/wordnet")
MISSING = ("METEOR skipped: WordNet 3.0 not found (apt-get install wordnet-base, or python -m nltk.downloader wordnet, "
           "or set LMDISTILL_WORDNET to a WordNet dict dir)")

_LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
             "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
             "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity "
             "noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition "
             "verb.communication verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
             "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl").split()
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_TOKEN = re.compile(r"\w+|[^\w\s]")


def lexnames_table() -> str:
    """WordNet 3.0's lexnames file: ``NN<TAB>name<TAB>category`` per lexicographer file."""
    return "".join(f"{index:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n" for index, name in enumerate(_LEXNAMES))


def _reader_dir(dict_dir: Path) -> Path:
    """``dict_dir`` itself when it has lexnames, else a cache dir with copies of its files plus the lexnames table."""
    if (dict_dir / "lexnames").is_file():
        return dict_dir
    target = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lmdistill" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for file in dict_dir.iterdir():
        if file.is_file() and not (target / file.name).is_file():
            temporary = target / f".{file.name}.{os.getpid()}"
            shutil.copyfile(file, temporary)
            os.replace(temporary, target / file.name)
    if not (target / "lexnames").is_file():
        temporary = target / f".lexnames.{os.getpid()}"
        temporary.write_text(lexnames_table(), encoding="utf-8")
        os.replace(temporary, target / "lexnames")
    return target


@lru_cache(maxsize=1)
def find_wordnet():
    """nltk's WordNet reader over the first WordNet found (see the module docstring), or None."""
    try:
        import nltk
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError:
        return None
    class _WordNet30(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            # nltk maps other versions onto 3.0 through its own "wordnet" corpus; this one is 3.0 already.
            return None

    candidates = [Path(os.environ["LMDISTILL_WORDNET"])] if os.environ.get("LMDISTILL_WORDNET") else []
    try:
        candidates.append(Path(str(nltk.data.find("corpora/wordnet"))))
    except LookupError:
        pass
    candidates.append(DEBIAN_WORDNET)
    for dict_dir in candidates:
        if not (dict_dir / "data.noun").is_file():
            continue
        try:
            root = _reader_dir(dict_dir)
            if str(root) not in nltk.data.path:
                nltk.data.path.append(str(root))  # nltk reads corpora only under its data paths
            with warnings.catch_warnings():  # no multilingual data (omw) is wanted for METEOR
                warnings.simplefilter("ignore")
                reader = _WordNet30(str(root), None)
            reader.synsets("dog")  # fail here, not mid-evaluation
            return reader
        except (OSError, LookupError, ValueError):
            continue
    return None


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks (METEOR matches word tokens)."""
    return _TOKEN.findall(text.lower())


def meteor(predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float | None:
    """Mean sentence METEOR (nltk defaults: α = 0.9, β = 3, γ = 0.5; exact, Porter-stem and WordNet-synonym matches)
    in [0, 1]; with several references a sentence takes its best. None when WordNet is absent."""
    wordnet = find_wordnet()
    if wordnet is None:
        return None
    from nltk.translate.meteor_score import meteor_score

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    total = 0.0
    for prediction, refs in zip(predictions, references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        total += meteor_score([tokenize(ref) for ref in refs], tokenize(prediction), wordnet=wordnet)
    return total / len(predictions)
