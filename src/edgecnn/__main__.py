"""``python -m edgecnn`` (how torchrun starts the ranks of ``edgecnn train --nproc K``)."""
from edgecnn.cli import app

app(prog_name="edgecnn")
