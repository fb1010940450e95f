"""The keys of every batch that flows between env runners, modules and learners."""


class Columns:
    """String constants naming batch columns.

    Kept as plain strings (not an Enum) so batches stay ordinary dicts that
    users can build by hand, exactly as RLlib's ``Columns`` does.
    """

    # Observations and what follows them.
    OBS = "obs"
    NEXT_OBS = "new_obs"
    INFOS = "infos"

    # Actions and their distribution.
    ACTIONS = "actions"
    ACTION_DIST_INPUTS = "action_dist_inputs"
    ACTION_LOGP = "action_logp"
    ACTION_PROB = "action_prob"
    ACTION_MASK = "action_mask"

    # Rewards and episode ends.
    REWARDS = "rewards"
    TERMINATEDS = "terminateds"
    TRUNCATEDS = "truncateds"

    # Value function and learning targets.
    VF_PREDS = "vf_preds"
    ADVANTAGES = "advantages"
    VALUE_TARGETS = "value_targets"

    # Recurrent state.
    STATE_IN = "state_in"
    STATE_OUT = "state_out"
    SEQ_LENS = "seq_lens"
    PREV_ACTIONS = "prev_actions"
    PREV_REWARDS = "prev_rewards"

    # Intermediate outputs and bookkeeping.
    EMBEDDINGS = "embeddings"
    EPS_ID = "eps_id"
    AGENT_ID = "agent_id"
    MODULE_ID = "module_id"
    LOSS_MASK = "loss_mask"
