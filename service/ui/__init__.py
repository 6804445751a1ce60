"""The console at ``/ui``: HTML pages over the model store, the drift index and the I/O log.

``routes`` is the only module that knows HTTP; the others gather data and know nothing of it.
"""
