"""From runbook + inventory to a complete plan before anything runs: the DAG, waves, the reverse
plan of a failback, predictions from history, and previews."""
