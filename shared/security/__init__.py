"""Webhook security: who the caller is (callers), signed requests (signature), signatures accepted once
(replay) and idempotency keys (idempotency)."""
