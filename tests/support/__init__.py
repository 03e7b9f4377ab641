"""Helpers shared by the test suites (servers on loopback, fault proxies...)."""
