"""Exactly-once under faults: a chaos run with an independent ledger audit (issue 6).

``python -m bench.chaos --payouts 100 --seed 1`` runs K payouts across every operating
mode while faults are injected (:mod:`bench.chaos.faults`: the network's, the processes',
an operator's resets and terminations), outside parties fill the queue and front-run the
engine (:mod:`bench.chaos.outside`), an external signer misbehaves
(:mod:`bench.chaos.signer`) and the same keys are started twice, and then audits the
ledger against the DB and Temporal (:mod:`bench.chaos.audit`). It exits non-zero on any
duplicate, lost payout or disagreement, printing the keys, envelopes and ledger entries
involved.
"""
