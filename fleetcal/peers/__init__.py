"""Peers fleetcal is compared with on the same published rows, each run in its own environment (scripts/setup_peers.sh)."""
