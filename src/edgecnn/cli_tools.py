"""`edgecnn tools`: the external tools edgecnn drives in their own environments (today FINN: hw/finn/tool.py)."""
from __future__ import annotations

import typer
from rich.console import Console

from edgecnn.cli_boundary import fail
from edgecnn.errors import EdgeCNNError

console = Console()
tools_app = typer.Typer(help="External tools edgecnn drives in their own environments (FINN).", no_args_is_help=True)
@tools_app.command("install")
def tools_install(tool: str = typer.Argument(..., help="finn"),
                  force: bool = typer.Option(False, "--force", help="Recreate the environment.")) -> None:
    """Install an external tool into its own environment under edgecnn's cache (finn: finn-plus, about 6 GB)."""
    from edgecnn.hw.finn.tool import install_finn

    try:
        if tool != "finn":
            raise EdgeCNNError(f"unknown tool '{tool}'; edgecnn installs: finn")
        python = install_finn(force=force, log=lambda line: console.print(line, markup=False))
    except EdgeCNNError as exc:
        fail(exc)
    console.print(f"FINN ready: {python}")
