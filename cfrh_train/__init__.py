"""cfrh_train: stage 2 of cfrh. Train hashing methods on a stage-1 cache, select on validation,
evaluate the queries once, and write a run folder."""
