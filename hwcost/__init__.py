"""hwcost: workloads derived from model configs and differentiable hardware cost models (Equinox)."""
