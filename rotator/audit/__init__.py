"""The audit trail: the structlog pipeline with redaction (`pipeline`: emit,
bound_contextvars), the hash-chained audit file and its verifier (`chain`), keyed token
fingerprints (`fingerprint`) and the event catalogue (`events`).

Sits just above the shared bottom modules: it may import config, errors and fsutil, and is
imported by every layer above (stores included). Callers write
`from rotator.audit import pipeline as audit` and then `audit.emit(...)`.
"""
