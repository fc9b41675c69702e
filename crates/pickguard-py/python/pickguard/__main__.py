"""``python -m pickguard ...`` runs the command line."""

from ._cli import main

main()
