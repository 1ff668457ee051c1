"""Metrics and evaluation of trained runs."""
