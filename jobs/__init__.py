"""Report jobs: a report is rows in the database (a report and its shards), worked on in steps
by any process; see `jobs.steps` for the steps and `jobs.states` for every change of state."""
