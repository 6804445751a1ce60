"""The ``vigil`` command line: ``main`` is the root; ``logs`` and ``monitoring`` add commands."""
