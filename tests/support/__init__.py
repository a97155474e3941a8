"""Shared test support: real servers (embedded PostgreSQL, Redis, the gRPC app) on loopback."""
