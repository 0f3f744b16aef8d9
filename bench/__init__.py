"""The benchmark (`python -m bench`, or `bash dev.sh bench`): figures against targets, not pass/fail.

It runs the app against the local protocol stand-ins (tests/standins) and Azurite, and writes bench/RESULTS.md.
"""
