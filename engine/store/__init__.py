"""What kamigate keeps in Redis and how it reaches it: key names (keys), the Lua script
registry (scripts), connections (connection), the embedded server (embedded), order records
(records), the audit trail (audit), liveness (heartbeat) and codes at rest (sealing)."""
