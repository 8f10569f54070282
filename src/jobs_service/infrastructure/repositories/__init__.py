"""Query functions, one module per table: the only place SQL about a table is written."""
