"""Benchmarks: each compares coeflow side by side with the peer a user would pick and with the
physical limit measured in the same run."""
