"""The job queue and scheduler: ids, priorities, cancel, deadlines, watch."""
