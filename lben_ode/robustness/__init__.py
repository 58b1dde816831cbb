"""Robustness evaluation: certificates, Lipschitz lower bounds and attacks."""
