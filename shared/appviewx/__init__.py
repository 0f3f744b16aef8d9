"""AppViewX: the renew API client, webhook request validation and answers, the renewal by stage (rules, storing in
Key Vault, the webhook, completion, the queue worker), the queue message and the renewal records (pending table)."""
