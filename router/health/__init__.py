"""Is a backend alive: the detector (pure hysteresis counters) and the probes."""
