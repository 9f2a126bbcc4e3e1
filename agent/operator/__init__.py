"""What people run by hand: the console, status, inspect, the quarantine and resend
verbs, and the demo. May import any room below the daemon, never ``daemon`` or ``cli``."""
