"""``python -m service.cli`` runs the ``vigil`` command line."""

from service.cli.main import main

main()
