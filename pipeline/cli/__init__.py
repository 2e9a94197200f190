"""The `secanalyst` command (typer app in `app.py`) and its sub-commands: the top layer,
it may import everything below it and nothing imports it (see README.md)."""
