"""The command line, ``python -m textonly``."""
