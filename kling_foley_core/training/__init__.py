"""Training-side building blocks (losses, schedules); trainers import them by module path."""
