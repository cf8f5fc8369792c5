"""`python -m bench [--quick] [--only a,b,c,d]`: run the benchmark, print the table, write bench/results/latest.json."""

from bench.run import main

if __name__ == "__main__":
    raise SystemExit(main())
