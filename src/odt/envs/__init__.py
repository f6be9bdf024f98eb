"""Environments odt registers with Gymnasium (``gym.make("odt/RewardHill-v0")``)."""
import gymnasium as gym

if "odt/RewardHill-v0" not in gym.registry:
    gym.register(id="odt/RewardHill-v0", entry_point="odt.envs.reward_hill:RewardHillEnv")
