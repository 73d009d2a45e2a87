"""The sending side of the two-phase transaction (docs/transactions.md), shared by the
Distribution service and by a parent edge relaying to its children (docs/tiers.md)."""
