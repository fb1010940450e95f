"""Module and agent ids with a conventional meaning across the library."""
from typing import Any, Hashable

ModuleID = str
AgentID = Hashable

#: The module id a single-agent setup (or a gymnasium env) is mapped to.
DEFAULT_MODULE_ID: ModuleID = "default_policy"
#: The agent id under which a gymnasium (single-agent) env's one agent acts.
DEFAULT_AGENT_ID: Any = "default_agent"
#: The conventional id of an encoder module that several policies share.
SHARED_ENCODER_ID: ModuleID = "shared_encoder"
