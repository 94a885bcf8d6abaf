"""Running a suite: the plan of work units, the executors, the runner that asks adapters, the store."""
