from cfrh.cli import train_app

train_app()
