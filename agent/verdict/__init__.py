"""The series verdict: the judge that joins QC and triage, routing, and the release
gate with holds and the hold timeout. May import the ground, ``journal``, ``receive``, ``qc``
and ``triage``."""
