"""textonly: a reproducible study of text-only training for fine-grained visual understanding in VLMs.

The package is thin on purpose: notebooks and the CLI (``python -m textonly``) call it;
no logic lives only in a notebook.
"""

__version__ = "0.1.0"
