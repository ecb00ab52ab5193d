"""The serverless backends: one module each, listed once here.

Each module (:mod:`.lambda_`, :mod:`.sagemaker`, :mod:`.bedrock`, :mod:`.ecs`) declares its target
schema with its profile, its adapter and the IAM actions that adapter calls, as a
:class:`~scaler.backends.base.Backend` named ``BACKEND``. The policy schema accepts exactly the
backends listed in :data:`BACKENDS` (:data:`scaler.core.policy.ServerlessTarget` is their union),
and the actuators (:mod:`scaler.adapters.serverless`) dispatch to their adapters.

Adding a backend is one module here, one line in :data:`BACKENDS` and one test file;
``tests/backends/test_registry.py`` checks that every backend the schema accepts has an adapter, a
profile and a target of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from scaler.backends import bedrock, ecs, lambda_, sagemaker
from scaler.backends.base import Backend

BACKENDS: Final[Mapping[str, Backend]] = MappingProxyType(
    {
        backend.name: backend
        for backend in (
            lambda_.BACKEND,
            sagemaker.BACKEND,
            bedrock.BACKEND,
            ecs.BACKEND,
        )
    }
)
