//! DST property tests against an independent brute-force oracle.
