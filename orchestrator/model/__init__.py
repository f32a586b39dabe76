"""What the operator writes: YAML with line numbers, field checks, the runbook, the inventory,
templates and units. See docs/reference.md for the formats."""
