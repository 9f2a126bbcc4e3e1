"""Shared test helpers: peers (dcmtk, Orthanc, Mosquitto, the agent as a process), data
set builders, phantoms and corpora. One home each; tests import them from here."""
