"""What is measured of each answer: accuracy metrics, and the time and memory of each model call."""
