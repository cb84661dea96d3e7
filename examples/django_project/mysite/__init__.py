"""The example project: its settings, URLs and the module the WSGI server loads."""
