"""Image QC: per-image metrics as images arrive, the protocols that grade them, the
series QC verdict and its SR. May import the ground and ``journal``."""
