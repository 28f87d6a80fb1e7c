"""Engine: the scheduler (one generation thread, lanes, scheduling policy, jobs), decoding,
stats and the service."""
