from collections import Counter

import numpy as np

from cfrh.text import STOP_WORDS, bag_of_words, build_vocabulary, tokenize


def test_tokenize_drops_stop_words_digits_and_case():
    assert tokenize("The Dog, the DOG and 2 cats!") == ["dog", "dog", "cats"]


def test_vocabulary_by_document_frequency():
    texts = ["dog dog dog cat", "cat bird", "cat dog", "fish"]
    # df: cat 3, dog 2, bird 1, fish 1 → with min_df 2 only cat, dog; ordered by df
    assert build_vocabulary(texts, size=10, min_df=2) == ["cat", "dog"]
    assert build_vocabulary(texts, size=3, min_df=1) == ["cat", "dog", "bird"]  # ties alphabetical


def test_bag_of_words_matches_naive_counts():
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "the", "eps"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 9))) for _ in range(50)]
    vocab = build_vocabulary(texts, size=4, min_df=1)
    assert "the" not in vocab and "the" in STOP_WORDS
    bow = bag_of_words(texts, vocab).toarray()
    for i, text in enumerate(texts):
        counts = Counter(text.split())
        assert [counts[w] for w in vocab] == bow[i].tolist()
