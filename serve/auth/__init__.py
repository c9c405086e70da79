"""Access to a shared server: scoped API keys (roles.py, keys.py, patterns.py), per-key limits
(limits.py), the middleware that applies them and writes the audit log (middleware.py), what
routes ask of a request's key (access.py), and log redaction (redact.py)."""
