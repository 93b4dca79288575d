"""What a table asks for and the run folders do not hold yet: trained here, or tuned then trained.

``make table`` names datasets × methods × bits × seeds (× encoders, × default and tuned
configs); a finished run folder made from the very same inputs is reused, anything else is
trained (or its study run or resumed first). ``table`` then renders what is there.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product
from pathlib import Path

from cfrh.errors import ConfigError
from cfrh_cache.store import Cache
from cfrh_train.config import load
from cfrh_train.data import choose_encoder, data_inputs, text_input
from cfrh_train.results import MODEL, inputs, run_dir, same_inputs
from cfrh_train.train import run
from cfrh_train.tune import has_search_space, study_dir, tune


def ensure_runs(datasets: list[str], methods: list[str], bits: list[int], seeds: list[int], cache_dir: str | Path,
                runs_dir: str | Path, device: str = "auto", progress: bool = True, log=print,
                encoders: list[str | None] = (None,), need_model: bool = False, tuned: int = 0,
                on_run: Callable[[Path], None] | None = None) -> dict[str, int]:
    """Train what is missing or stale; reuse finished run folders made from the same inputs.
    Returns the counts (trained, reused); ``on_run(folder)`` hears every run folder the table
    asks for, trained or reused (``make table RERANK=R`` exports and re-ranks it there).
    ``encoders``: image arrays of the cache to compare (None: the cache's only one).
    ``need_model``: a run folder without its model file (an older layout) is trained again, so
    that it can be exported (``make table RERANK=R`` searches the runs' indexes).
    ``tuned``: also rows from each learned method's best config of a study of exactly that many
    trials (``cfrh_train.tune``; run or resumed here), beside the default rows."""
    counts = {"reused": 0, "trained": 0}
    caches = {d: Cache.open(Path(cache_dir) / d) for d in datasets}
    texts: dict[tuple[str, str], dict | None] = {}  # the text each method reads; None: it cannot run here
    for dataset, method in product(datasets, methods):
        try:
            dense = text_input(caches[dataset], method, None)
            texts[dataset, method] = {"text": dense} if dense else {}
        except ConfigError as exc:  # UCMFH on a cache without text embeddings: no row, and it is said
            log(f"no {method} rows for {dataset}: {exc}")
            texts[dataset, method] = None
    total = len(encoders) * len(bits) * len(seeds) * sum(  # run k of N, as the log says
        1 + bool(tuned and has_search_space(m)) for (_, m), text in texts.items() if text is not None)
    for dataset in datasets:
        cache = caches[dataset]
        for encoder, method, b in product(encoders, methods, bits):
            text = texts[dataset, method]
            if text is None:
                continue
            variants = [(None, None)]
            if tuned and has_search_space(method):
                log(f"tuning {method} on {dataset}, {b} bits: a study of {tuned} trials (resumed where it stopped)")
                tune(dataset, method, b, tuned, cache_dir, runs_dir, device=device)
                best = study_dir(runs_dir, dataset, method, b) / "best.json"
                variants.append((best, {"tuned": {"trials": tuned, "study": str(best.parent)}}))
            for (config_file, variant), seed in product(variants, seeds):
                config = load(dataset, config_file, {"method": method, "bits": b, "seed": seed, "device": device,
                                                     "encoder": encoder, **text})
                folder = run_dir(runs_dir, dataset, config, variant)
                wanted = inputs(config, data_inputs(cache, choose_encoder(cache, encoder), config["text"]))
                same, why = same_inputs(folder, wanted)
                if same and (not need_model or (folder / MODEL).is_file()):
                    counts["reused"] += 1
                else:
                    if (folder / "result.json").exists():
                        log(f"not reused: {why}")
                    log(f"run {sum(counts.values()) + 1} of {total}: training {method}{' (tuned)' if variant else ''} on {dataset}"
                        f"{f' [{encoder}]' if encoder else ''}, {b} bits, seed {seed}")
                    run(config, cache_dir, dataset, runs_dir, progress=progress, variant=variant)
                    counts["trained"] += 1
                if on_run is not None:
                    on_run(folder)
    return counts
