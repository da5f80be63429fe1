"""The front door's core, without HTTP: admission (token buckets), ingest (one coalesced admit
per event-loop tick), this process's reply channel, the circuit breaker around Redis, surge
detection and backpressure from the workers."""
