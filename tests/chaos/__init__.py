"""The failure suite: ``make chaos`` (full size) and tests/e2e/test_chaos.py (short)."""
