"""The record of a run, which the engine writes and everything else reads: outcomes and journal
event kinds, the journal, the summary built from it, listing runs, and the store that keeps them."""
