"""The ``flowxfer`` command line: parse, call one library function, render.

Commands live in their own modules and are registered on :data:`main` here.
"""

from __future__ import annotations

import click

from flowxfer import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowxfer")
def main() -> None:
    """flowxfer: resumable, verified bulk transfers to and from Flow."""


from ._serve import admin, serve  # noqa: E402  (commands register after main exists)

main.add_command(serve)
main.add_command(admin)
