"""The ``tcp-analyzer`` command line: thin commands over the library (``cli.py`` holds the group)."""
