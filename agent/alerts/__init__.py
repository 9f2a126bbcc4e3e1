"""Telling people: the durable outbox, MQTT (or the local feed without a broker), the
patient-data policy, and technologist commands coming back. May import the ground and
``journal``."""
