"""What ``fleetcal report`` writes: tables, plots and the generated README and docs sections."""
