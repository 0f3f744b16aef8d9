"""RCL (Let's Encrypt through RCL's service): the API client, the pure decisions, the nightly runs and their
table of scheduled renewals."""
