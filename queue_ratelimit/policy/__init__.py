"""Pure decision rules: no I/O, no clock reads (time is passed in)."""
