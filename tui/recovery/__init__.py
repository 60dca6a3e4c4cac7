"""Smart-card recovery actions: Step 4 verify, Step 6 PUK reset, admin-key unlock, Step 10 reprovision.

Every action here changes a token or spends a try, so each one:
- re-resolves the token by its ID just before the write (`target.open_token`),
- refuses in read-only (tier-1) mode (`common.require_writable`),
- holds the token's operation lock for the whole exchange,
- escrows every PIN, PUK or key it sets before the APDU that sets it,
- writes an audit record before and after, and appends a session event.

Modules: `common` (shared refusals and errors), `target` (find the token
again), `verify` (Step 4), `generate` (new PINs and PUKs), `manifest` (the
site PUK manifest), `puk_reset` (Step 6), `unlock` (Crescendo admin-key
unlock), `reprovision` (Step 10).
"""
