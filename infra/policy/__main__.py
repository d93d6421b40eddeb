"""CrossGuard pack: `pulumi preview --policy-pack infra/policy --policy-pack-config infra/policy/config.<region>.json`.

Constructing PolicyPack starts the analyzer server, so it only happens here; the rule
functions live in recops_infra.policies and are unit-tested directly.
"""

from pulumi_policy import PolicyPack

from recops_infra.policies import pulumi_policies

PolicyPack(name="recops-guardrails", policies=pulumi_policies())
