"""cfrh_search: use the codes. A run's search index (exact or faiss's approximate kinds, in
shards), queries hashed with the run's model, re-ranking, the HTML pages, the local search
server and the qualitative example figures. It reads run folders (``cfrh_train.results``) and
the method interface (``cfrh_train.methods``), and nothing else of training."""
