"""The fault and secret-leak sweep: canaries, injected faults, fuzzed replies and terminal checks."""
