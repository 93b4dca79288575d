"""matplotlib for files only: pyplot on the Agg backend, imported on first use (it is slow to load),
for the table's figures (``cfrh_train.plots``) and the example figures (``cfrh_search.examples``)."""

from __future__ import annotations


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
