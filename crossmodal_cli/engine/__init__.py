"""Training engine: the loop, checkpoints, schedules and reporting. Knows nothing about modalities."""
