"""The guide's shared-encoder classes with ERRATA 1 applied: one line differs.

The encoder returns a dict; the policy heads need the tensor under
"encoder_embeddings". Everything else is the as-printed code.
"""
from tests.guide_examples.shared_encoder_as_printed import (  # noqa: F401  (re-exported)
    SharedEncoder,
    VPGMultiRLModuleWithSharedEncoder as _AsPrinted,
    VPGPolicyAfterSharedEncoder,
)


class VPGMultiRLModuleWithSharedEncoder(_AsPrinted):
    """The guide's container with the corrected embeddings line."""

    def _forward(self, batch, **kwargs):
        # Collect our policies' outputs in this dict.
        outputs = {}

        # Loop through the policy nets (through the given batch's keys).
        for policy_id, policy_batch in batch.items():
            rl_module = self._rl_modules[policy_id]

            # Pass policy's observations through shared encoder to get the features for
            # this policy.
            policy_batch["encoder_embeddings"] = self.encoder._forward(batch[policy_id])["encoder_embeddings"]

            # Pass the policy's embeddings through the policy net.
            outputs[policy_id] = rl_module._forward(batch[policy_id], **kwargs)

        return outputs
