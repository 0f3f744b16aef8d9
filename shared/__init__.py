"""certrenew: the app's own package of common code (settings, protocols, decisions)."""
