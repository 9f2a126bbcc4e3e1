"""Image QC: per-image metrics as images arrive, the protocols that grade them, the
series QC verdict and its SR, and where on an image each metric saw its artifact
(``locate``). May import the ground and ``journal``."""
