from cfrh_cache.cli import app

app()
