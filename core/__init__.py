"""What every layer shares and that imports nothing else of the project: errors, paths, argument parsing, device
identity, the record schema, hardware and model facts, operation counts and the data catalogs."""
