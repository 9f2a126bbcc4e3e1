"""Forwarding: one worker per destination drains its journal queue over DIMSE,
STOW-RS or into a folder, and maps each answer to delivered, retry or quarantine. May import
the ground, ``journal`` and ``receive`` (the spool it reads)."""
