"""rangectl: cyber-range exercises from scenario files."""

__version__ = "0.1.0"
