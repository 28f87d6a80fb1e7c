"""Engine: the scheduler (one generation thread, lanes, the scheduling policy, jobs), decoding, stats and the service."""
