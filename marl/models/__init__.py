"""Default models: their config, the plain builders and the default RLModules."""
from marl.models.central_critic import CENTRAL_CRITIC_ID, CentralCriticTorchRLModule
from marl.models.cnn import build_cnn, default_conv_filters
from marl.models.default_actor_rl_module import DefaultActorTorchRLModule
from marl.models.default_bc_rl_module import DefaultBCTorchRLModule
from marl.models.default_dqn_rl_module import DefaultDQNTorchRLModule
from marl.models.default_model_config import DefaultModelConfig, resolve_default_model_config
from marl.models.default_ppo_rl_module import DefaultPPOTorchRLModule
from marl.models.default_sac_rl_module import DefaultSACTorchRLModule
from marl.models.mixers import MIXER_ID, QMixer, VDNMixer
from marl.models.mlp import build_mlp
from marl.models.shared_encoder import (
    SharedEncoderModule,
    SharedEncoderMultiRLModule,
    SharedEncoderPolicyHead,
    shared_encoder_module_spec,
)

__all__ = [
    "CENTRAL_CRITIC_ID",
    "CentralCriticTorchRLModule",
    "DefaultModelConfig",
    "DefaultActorTorchRLModule",
    "DefaultPPOTorchRLModule",
    "DefaultBCTorchRLModule",
    "DefaultDQNTorchRLModule",
    "DefaultSACTorchRLModule",
    "resolve_default_model_config",
    "build_mlp",
    "MIXER_ID",
    "QMixer",
    "VDNMixer",
    "build_cnn",
    "default_conv_filters",
    "SharedEncoderModule",
    "SharedEncoderMultiRLModule",
    "SharedEncoderPolicyHead",
    "shared_encoder_module_spec",
]
