"""drx: a failover/failback runbook engine for disaster-recovery drills."""

__version__ = "0.1.0"
