"""Training the world model: the trainer (`train`, one GPU, many, or a CPU), the reward and
termination head (`reward_head`), and imagined copies of episodes that training reads
(`imagined`)."""
