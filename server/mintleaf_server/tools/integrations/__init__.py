"""Built-in integrations, one module per provider, each calling the provider's own API."""

from .base import IntegrationCall, Method, Provider
from .registry import PROVIDERS, provider_method, run_integration

__all__ = ["PROVIDERS", "IntegrationCall", "Method", "Provider", "provider_method", "run_integration"]
