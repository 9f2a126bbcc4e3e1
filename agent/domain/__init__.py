"""The domain types every room shares: instances and series, verdicts and alerts,
delivery outcomes and technologist commands. Small frozen dataclasses, named as DICOM names
things; and what every DICOM result object shares (``headers``, ``results``: the sanitised
patient and study context, the private coding scheme, the KOS builder). The ground: imports
nothing from the agent but ``config`` and ``errors``."""
