"""The pure simulator: workloads, cluster model, baselines, hindsight oracle, report."""
