"""Series assembly: the stateful stage that decides, from the data first and the clock
last, when a series is complete. May import the ground and ``journal``."""
