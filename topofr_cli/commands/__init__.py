"""One module per user command: each runs the core and returns a typed result the CLI renders."""
