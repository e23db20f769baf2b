"""FINN as an external tool: its own environment (tool.py finds or installs it, runs worker.py there on one file
per subprocess and caches FINN's verdict and estimates). worker.py is a standalone script for FINN's interpreter."""
