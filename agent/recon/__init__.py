"""Reconstruction: CT projection data and MRD (ISMRMRD) raw data become image series,
through the pure kernels in ``kernels/``. May import the ground, ``journal`` and ``receive``
(to put what it makes into the spool)."""
