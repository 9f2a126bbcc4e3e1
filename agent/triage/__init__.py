"""AI triage: the ONNX models and their manifests, preprocessing, per-slice scoring as
images arrive, series aggregation and the triage SR. May import the ground, ``journal`` and
``qc`` (the SR builders share its header sanitiser)."""
