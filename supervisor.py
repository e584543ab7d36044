"""The central supervisor: starts, stops and restarts pods, and brings every unfinished task
back after a restart. Not built yet: issue #3 brings it (see specs/supervisor/)."""
