"""What a person reads: the verdict table (:mod:`.render`), the visual report (:mod:`.html`) and
its figures (:mod:`.figures`)."""
