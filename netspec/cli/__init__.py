"""The `netspec` command: thin Typer commands over the API, the only place that prints or exits.
A user's mistake is a message and exit code 1, never a traceback.

base.py holds what the commands share; each module beside it registers a group of commands on
the one app (a new command is a function in one of them, or a new module listed here)."""
from netspec.cli.base import app
# each registers its commands on the app; `netspec --help` lists them in this order
from netspec.cli import check, train, runs, explore, grade  # noqa: E402,F401,I001

__all__ = ["app"]
