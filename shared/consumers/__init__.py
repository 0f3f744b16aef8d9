"""Certificate consumers: the Azure resources that use the vault's certificates (found through Resource Graph)."""
