"""Spillway: forecast-driven autoscaling of LLM inference across Kubernetes GPU replicas and serverless."""

__version__ = "0.1.0"
