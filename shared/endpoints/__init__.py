"""TLS endpoints: what an endpoint serves (probe), whether it matches Key Vault (decisions) and the check run."""
