"""The app's view of its Key Vault: the Key Vault event path (events, claims, decisions) and the inventory."""
