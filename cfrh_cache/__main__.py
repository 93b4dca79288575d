"""``python -m cfrh_cache`` (as ``torchrun … -m cfrh_cache features …`` runs it): the entry point
of ``cfrh-cache``, which is declared in ``cfrh_cli``. An entry point, not part of the package's
library: nothing imports this module."""

from cfrh_cli.cache import app

app()
