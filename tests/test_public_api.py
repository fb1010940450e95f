"""Every public name of API.md is importable from the top of `marl`."""

import marl

API_NAMES = [
    "Columns", "RLModule", "TorchRLModule", "RLModuleSpec", "MultiRLModule", "MultiRLModuleSpec",
    "SHARED_ENCODER_ID", "DEFAULT_MODULE_ID", "DEFAULT_AGENT_ID", "DefaultModelConfig",
    "DefaultPPOTorchRLModule", "DefaultBCTorchRLModule", "ValueFunctionAPI", "InferenceOnlyAPI",
    "TargetNetworkAPI", "QNetAPI", "Distribution", "TorchCategorical", "TorchDiagGaussian",
    "TorchSquashedGaussian", "TorchDeterministic", "TorchMultiCategorical", "TorchMultiDistribution",
    "FlattenObservations", "AlgorithmConfig", "Algorithm", "PPOConfig", "PPO", "VPGConfig", "VPG",
]


def test_every_api_name_is_exported_and_resolves():
    assert set(API_NAMES) <= set(marl.__all__)
    for name in marl.__all__:
        assert getattr(marl, name) is not None, name


def test_columns_has_every_listed_key():
    for key in ["OBS", "NEXT_OBS", "ACTIONS", "ACTION_DIST_INPUTS", "ACTION_LOGP", "ACTION_PROB",
                "ACTION_MASK", "VF_PREDS", "REWARDS", "TERMINATEDS", "TRUNCATEDS", "STATE_IN",
                "STATE_OUT", "EMBEDDINGS", "INFOS", "EPS_ID", "AGENT_ID", "MODULE_ID", "LOSS_MASK",
                "ADVANTAGES", "VALUE_TARGETS"]:
        assert isinstance(getattr(marl.Columns, key), str)


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="NoSuchThing"):
        marl.NoSuchThing


def test_import_marl_stays_cheap():
    # Importing the package must not pull in the algorithm stack or the envs.
    import subprocess, sys

    code = "import sys, marl; print('envs' in sys.modules, 'marl.algorithms' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
