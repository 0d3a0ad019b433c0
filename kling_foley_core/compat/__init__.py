"""Compatibility with reference implementations: checkpoint converters and the parity tool."""
