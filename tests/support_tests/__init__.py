"""Tests of the shared test helpers themselves (the fault proxy)."""
