"""One function per user command, taking plain arguments and returning a typed result; `cli/` parses,
calls one of these and renders."""
