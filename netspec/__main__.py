from netspec.cli import app

app(prog_name="netspec")
