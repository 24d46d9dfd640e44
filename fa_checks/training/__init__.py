"""Training: the loop (:mod:`.loop`), the cached runs and baselines a subject needs
(:mod:`.runs`), progress lines (:mod:`.progress`) and the threads rule (:mod:`.threads`)."""
