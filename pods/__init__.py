"""Pods: one isolated asyncio unit per unfinished task (state, scheduler, sync engine,
workspace manager). Not built yet: issue #3 brings them (see specs/pods/)."""
