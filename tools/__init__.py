"""Project tools behind make targets (`python -m tools.<name>`)."""
