"""AWS serverless actuators, by their old name: the backends live in :mod:`scaler.adapters.serverless`.

``AwsServerless`` is :class:`scaler.adapters.serverless.ServerlessBackends` (Lambda, SageMaker and
Bedrock through one port); ``IAM_ACTIONS`` lists every AWS action those backends call, for the
chart's IAM policy.
"""

from __future__ import annotations

from scaler.adapters.serverless import IAM_ACTIONS, ServerlessBackends

AwsServerless = ServerlessBackends

__all__ = ["IAM_ACTIONS", "AwsServerless"]
