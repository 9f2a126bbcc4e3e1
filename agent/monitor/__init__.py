"""The agent as hospital IT sees it: start-up checks shared by ``run`` and ``check-config``,
the probes of ``check-config --probe``, the ``health`` verb. May import the ground
(``config``, ``errors``, ``domain``), ``journal``, and the ``qc`` and ``triage`` rooms (to ask
their protocols and models); no room imports it but the top (``daemon``, ``cli``)."""
