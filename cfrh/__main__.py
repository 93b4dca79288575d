from cfrh.cli import app

app()
