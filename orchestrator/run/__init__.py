"""Executing a plan: the runner (one run end to end), the pre-flight, the executor (scheduling,
retries, checks, gates), the live RTO budget and what the operator sees."""
