"""Cross-cutting parts every system uses: settings, typed errors, UTC timestamps, telemetry and redaction,
outbound HTTP rules, text safe to echo and certificate-material helpers. Imports nothing else of `shared`."""
