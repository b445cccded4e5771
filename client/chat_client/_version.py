"""The distribution's version, in a module of its own so every module can import it
without importing the package's `__init__` (which imports them)."""

__version__ = "0.1.0"
