"""The node agent (``node-agent``): runs on a production device, talks outbound only."""

__version__ = "0.1.0"
