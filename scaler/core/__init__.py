"""The pure core: policy, planner, queueing, schedules. No clocks, no I/O, no asyncio."""
