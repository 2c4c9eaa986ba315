"""Training and evaluation loops, checkpoints, torchrun/DDP and run logging."""
