"""Smart-card recovery actions: Step 4 verify, Step 6 PUK reset, admin-key unlock, Step 10 reprovision."""
