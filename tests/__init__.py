"""The test suite, a package so its folders import as tests.transfer, never as the engine's top-level names."""
