"""Receiving: the C-STORE SCP, the checks each data set must pass, the durable spool,
and local ingest of images the agent makes itself. May import the ground and ``journal``."""
