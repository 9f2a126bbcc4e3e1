"""The series verdict: the judge that joins QC and triage, routing, the release gate with
holds and the hold timeout, and filing the result objects (reports, key-image and rejection
KOS). May import the ground, ``journal``, ``receive``, ``qc`` and ``triage``."""
