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


# Segment columns: the contract between the sampler (envs) and the learners.
# One entry per trajectory segment (see ``SEQ_LENS``), not per step, so they
# are never minibatched with the step columns.

#: Per segment, the observation after the segment's last step (post-connector).
BOOTSTRAP_OBS = "bootstrap_obs"
#: Per segment (stateful modules), the recurrent state to feed with ``BOOTSTRAP_OBS``.
BOOTSTRAP_STATE_IN = "bootstrap_state_in"
#: When a centralised critic asks for it: the env's global input (``env.state()``
#: or every agent's observation with a presence mask; ``envs.sampling.global_inputs``).
#: Inside the env runner one row per agent step; in the batches ``sample()``
#: returns a table with ONE row per env step, shared by every row of that step
#: in every module (the same array object in each module's batch), indexed by
#: ``GLOBAL_INDEX`` (per step) and ``BOOTSTRAP_GLOBAL_INDEX`` (per segment).
#: ``global_rows(batch)`` gives the per-step rows.
GLOBAL_OBS = "global_obs"
GLOBAL_INDEX = "global_index"
BOOTSTRAP_GLOBAL_INDEX = "bootstrap_global_index"
#: Per step, with ``GLOBAL_OBS``: the acting agent's index in ``possible_agents``.
AGENT_INDEX = "agent_index"
#: Per step, with ``GLOBAL_OBS``: which env episode and which step of it the row
#: belongs to, so rows of all agents at one env step can be joined (VDN/QMIX).
ENV_EPISODE_ID = "env_episode_id"
ENV_T = "env_t"


def env_step_keys(episode_ids, steps):
    """One sortable, comparable key per (env episode, step): rows with equal keys
    belong to the same env step (``np.unique`` / ``np.intersect1d`` work on them)."""
    import numpy as np

    keys = np.empty(len(steps), np.dtype([("episode", np.int64), ("t", np.int64)]))
    keys["episode"], keys["t"] = episode_ids, steps
    return keys


#: Per segment, the global input after the segment's last step.
BOOTSTRAP_GLOBAL_OBS = "bootstrap_global_obs"
#: Columns that describe segments rather than steps (or, for the table of global
#: inputs, env steps), so minibatching never slices them with the step columns.
SEGMENT_COLUMNS = (Columns.SEQ_LENS, BOOTSTRAP_OBS, BOOTSTRAP_STATE_IN, BOOTSTRAP_GLOBAL_OBS,
                   BOOTSTRAP_GLOBAL_INDEX, GLOBAL_OBS)


def global_rows(batch: dict):
    """The global input of every step row of a sampled batch (``GLOBAL_OBS[GLOBAL_INDEX]``)."""
    table = batch[GLOBAL_OBS]
    return table[batch[GLOBAL_INDEX]] if GLOBAL_INDEX in batch else table


def bootstrap_global_rows(batch: dict):
    """The global input after every segment (``GLOBAL_OBS[BOOTSTRAP_GLOBAL_INDEX]``)."""
    if BOOTSTRAP_GLOBAL_INDEX in batch:
        return batch[GLOBAL_OBS][batch[BOOTSTRAP_GLOBAL_INDEX]]
    return batch[BOOTSTRAP_GLOBAL_OBS]
