"""The domain types every room shares: instances and series, verdicts and alerts,
delivery outcomes and technologist commands. Small frozen dataclasses, named as DICOM names
things. The ground: imports nothing from the agent but ``config`` and ``errors``."""
