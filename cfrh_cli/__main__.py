from cfrh_cli import app

app()
