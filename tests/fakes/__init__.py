"""Local stand-ins for third-party services (loopback only), speaking their real wire shapes."""
