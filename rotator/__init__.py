"""rotator: keeps machine credentials fresh without a human in the loop."""

__version__ = "0.1.0"
