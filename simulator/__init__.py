"""What users touch: the headless session, real games, recording, the window, planners."""
