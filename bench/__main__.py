"""`python -m bench [--quick] [--only aobcepf]`: run the benchmark, print the table, write bench/results/latest.json."""

from bench.run import main

if __name__ == "__main__":
    raise SystemExit(main())
