"""pytest plugin of bilevel-check (entry point ``pytest11``); filled in by the oracle work."""
