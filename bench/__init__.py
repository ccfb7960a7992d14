"""Benchmark harness: build large databases, time every data function, load-test the overview.

    python -m bench.build --sizes 1m,10m     # build (or reuse) the benchmark databases
    python -m bench.run --sizes 1m,10m       # time everything, write bench/RESULTS.md
    python -m bench.load                     # wrk against gunicorn on the 1 M database

See bench/README.md.
"""
