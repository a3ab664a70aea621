"""Jobs: the service facade, the runner, GPU-slot scheduler, executions, lifecycle, recovery, store and rows."""
