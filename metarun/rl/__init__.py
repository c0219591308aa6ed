"""Meta-reinforcement learning helpers: advantage estimates, reference policies, published numbers."""
