"""AI triage: the ONNX models and their manifests, preprocessing, per-slice scoring as
images arrive, series aggregation and the triage SR. May import the ground and ``journal``."""
