"""``make bench``: ordermgr against a floor consumer that does the same I/O and nothing else.

Entry point: ``python -m bench.run`` (see ``bench/README.md``). Absolute numbers on a shared
machine are noise; every figure is printed as a ratio to the floor measured in the same run.
"""
