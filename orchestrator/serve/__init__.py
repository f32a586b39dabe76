"""``drx serve``: the war-room page and its API over a state directory or a shared store
(docs/reference.md, "drx serve")."""
