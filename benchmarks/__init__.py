"""Performance scripts: each measures two implementations side by side in one process and prints their ratio
(``python -m benchmarks.<name>``). They are measurements, not timed tests."""
