"""Action-conditioned video diffusion world model: data, network, diffusion, rollout, training."""
