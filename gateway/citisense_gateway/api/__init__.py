"""Operators' surface: HTTP API (OpenAPI), accounts and roles, and the dashboard."""

from citisense_gateway.api.app import create_app, document
from citisense_gateway.api.server import serve

__all__ = ["create_app", "document", "serve"]
