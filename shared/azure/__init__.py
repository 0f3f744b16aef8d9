"""Azure services the app talks to directly: Key Vault certificates, Table storage and the managed identity."""
