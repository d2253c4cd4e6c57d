"""The entry points: one module per subcommand of the ``fleetcal`` console script."""
