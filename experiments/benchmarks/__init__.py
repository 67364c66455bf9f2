"""Throughput benchmarks that print JSON figures."""
