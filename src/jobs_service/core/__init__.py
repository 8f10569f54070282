"""Settings, logging and the small domain types every layer shares; imports nothing of ours."""
