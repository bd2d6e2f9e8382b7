"""The fault suite: streams of signals against the paper venue while something breaks, then the
invariants checked automatically (see ``harness``)."""
