"""The package version, below every module that records it."""

__version__ = "0.1.0"
