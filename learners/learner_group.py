"""The learner group: today one local learner; the seam for DDP learners later."""
from __future__ import annotations

from typing import Any, Dict, Type

from marl.core.multi_rl_module import MultiRLModuleSpec

from learners.learner import TorchLearner


class LearnerGroup:
    """Holds the learner(s). ``learner`` is the local one users can inspect."""

    def __init__(self, *, config: Any, learner_class: Type[TorchLearner], module_spec: MultiRLModuleSpec) -> None:
        num_learners = int(getattr(config, "num_learners", 0) or 0)
        if num_learners > 0:
            raise NotImplementedError(
                f"num_learners={num_learners}: remote/DDP learners are not available yet; "
                "use num_learners=0 (one local learner)"
            )
        self.learner = learner_class(config=config, module_spec=module_spec)
        self.learner.build()

    def update_from_samples(self, samples: Dict[str, Any]) -> Dict[str, Any]:
        return self.learner.update_from_samples(samples)

    def get_weights(self) -> Dict[str, Any]:
        return self.learner.module.get_state()

    def get_state(self) -> Dict[str, Any]:
        return self.learner.get_state()

    def set_state(self, state: Dict[str, Any]) -> None:
        self.learner.set_state(state)
