"""Ready clean-room jobs: notebooks that use only declared plans, so the executor computes."""
