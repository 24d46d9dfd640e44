"""The protocol's figures: D1-D3 and the verdict (:mod:`.protocol`), the credit figures of a
subject (:mod:`.credit`), and the single credit metrics they are made of (:mod:`.metrics`)."""
