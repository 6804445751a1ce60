"""``python -m service.cli`` runs the ``vigil`` command line."""

from service.cli.main import main

if __name__ == "__main__":  # not when a child process imports it (spawn)
    main()
