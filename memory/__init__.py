"""Episodic memory by fast learning: a temporal LoRA trained on what was just generated.

    config        MemoryConfig (the `memory:` section of a YAML config)
    lora          peft adapter on the denoiser's temporal layers; reset, merge, save/load
    fast_learner  the memory loss (next_frame / trajectory forms) and FastLearner
    worker        the frame ring and the background thread that runs the learner
    episodic      EpisodicMemory: what a WorldSession owns
    revisit       python -m memory.revisit: does the world look the same on return?
    fps           python -m memory.fps: live frame rate with memory off vs on
    train_slowfast  python -m memory.train_slowfast: the base learns to use its memory
"""
