"""odt: return-conditioned sequence-model RL. Pretrain a Decision Transformer offline, finetune it
online (ODT), and act with it."""
from . import envs  # noqa: F401  (registers odt/RewardHill-v0 with Gymnasium)
from .config import Config, preset
from .data.sources import load_dataset
from .policy import Policy
from .scores import normalized_score
from .api import Trained, train  # noqa: E402  (last: it imports the training loop)

__all__ = ["Config", "preset", "load_dataset", "Policy", "normalized_score", "train", "Trained"]
__version__ = "0.1.0"
