"""Reading, checking and writing input files (polls, business hours, time zones, closures)
for `loader`: one load is one transaction."""
