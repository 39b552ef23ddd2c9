"""Analyses of trained spiking networks (information flow, firing rates)."""
