"""The technologist's web console: login and roles, the live series list, the key image
behind each alert, one-click decisions and the department view, served by the agent. May
import config, domain, errors, journal, alerts, operator, qc, triage."""
