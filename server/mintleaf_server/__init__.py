"""Mintleaf server: a self-hostable backend for AI agents and durable multi-step tasks."""

__version__ = "0.1.0"
