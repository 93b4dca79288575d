"""Bag-of-words text vectors for datasets that ship raw text (captions, tags).

The benchmarks' text side is a BoW over a fixed vocabulary (MIRFlickr 1,386 tags, COCO 2,000
words); we build the same kind: lower-case word tokens, English stop words and rare words
dropped, the top-V words by document frequency (ties by the word itself, so it is deterministic).

Scripts written without spaces (Chinese, Japanese kana) would otherwise make one token of a
whole sentence: each Han, Hiragana or Katakana character is a token of its own (the usual
character-unigram baseline for CJK retrieval), and so is each emoji. ``TOKENIZER`` names the
rule; the cache records it beside the vocabulary, and search refuses a cache built with another.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import scipy.sparse

from cfrh.errors import DataError

TOKENIZER = "words+cjk-chars+emoji/v2"
_CJK = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_EMOJI = "\u2600-\u27bf\U0001f000-\U0001faff"
TOKEN = re.compile(f"[{_CJK}]|[{_EMOJI}]|(?:(?![{_CJK}])[^\\W_])+(?:'(?:(?![{_CJK}])[^\\W_])+)?")
_SINGLE = re.compile(f"^[{_CJK}{_EMOJI}]$")

# The classic SMART/Glasgow-style English stop list, trimmed to words that carry no content.
STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not now of off on once only or other our ours ourselves out over own same she should so some such than
that the their theirs them themselves then there these they this those through to too under until up very
was we were what when where which while who whom why will with would you your yours yourself yourselves
s t don nbsp
""".split())


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stop words, digits and one-letter words; CJK characters and
    emoji one token each (they are kept though one character long)."""
    return [t for t in TOKEN.findall(text.lower())
            if _SINGLE.match(t) or (t not in STOP_WORDS and not t.isdigit() and len(t) > 1)]


def build_vocabulary(texts: list[str], size: int = 2000, min_df: int = 2) -> list[str]:
    """The ``size`` most frequent words by document frequency, each in at least ``min_df`` texts."""
    df = Counter()
    for text in texts:
        df.update(set(tokenize(text)))
    ranked = sorted((w for w, c in df.items() if c >= min_df), key=lambda w: (-df[w], w))
    if not ranked:
        raise DataError(f"no word occurs in {min_df} or more texts; cannot build a vocabulary (lower --min-df)")
    return ranked[:size]


def bag_of_words(texts: list[str], vocabulary: list[str]) -> scipy.sparse.csr_array:
    """Counts of each vocabulary word per text, as a CSR matrix (N, V) of uint8 (counts capped at 255)."""
    column = {w: j for j, w in enumerate(vocabulary)}
    indptr, indices, data = [0], [], []
    for text in texts:
        counts = Counter(column[t] for t in tokenize(text) if t in column)
        cols = sorted(counts)
        indices.extend(cols)
        data.extend(min(counts[c], 255) for c in cols)
        indptr.append(len(indices))
    return scipy.sparse.csr_array(
        (np.asarray(data, np.uint8), np.asarray(indices, np.int32), np.asarray(indptr, np.int64)),
        shape=(len(texts), len(vocabulary)))
