"""scanner-agent: the edge daemon beside a scanner.

The one package that touches asyncio and the network. See DESIGN.md for the
data flow; the public pieces are re-exported here.
"""

from agent.config import AgentConfig, load_config
from agent.errors import AgentError, ConfigError, JournalError, OutOfResources, RejectedInstance

__all__ = [
    "AgentConfig",
    "AgentError",
    "ConfigError",
    "JournalError",
    "OutOfResources",
    "RejectedInstance",
    "load_config",
]
__version__ = "0.1.0"
