"""AppViewX: the renew API client, webhook request validation and answers, the renewal pipeline to Key Vault,
the queue message of asynchronous renewals, and the renewal records (pending table)."""
