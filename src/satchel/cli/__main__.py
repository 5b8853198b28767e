"""``python -m satchel.cli``: the same as the ``satchel`` command."""

from satchel.cli import main

main()
