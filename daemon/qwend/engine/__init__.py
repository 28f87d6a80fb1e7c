"""Engine: the scheduler (one generation thread, lanes, jobs), decoding, stats and the service."""
