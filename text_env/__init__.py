"""text-env: text generation as Gymnasium environments.

Importing the package registers every ``TextEnv/*`` id with Gymnasium.

Example:
    >>> import gymnasium as gym
    >>> import text_env
    >>> env = gym.make("TextEnv/Reverse-v0")
    >>> obs, info = env.reset(seed=0)
"""

from text_env import rewards
from text_env.core import TextGenEnv
from text_env.registration import list_envs, register_envs
from text_env.rewards import register_reward
from text_env.tasks import Example, Task, make_task, register_task
from text_env.tokenizers import BPETokenizer, CharTokenizer, HFTokenizer, Tokenizer, load_tokenizer
from text_env.vector import TextGenVectorEnv

__version__ = "0.2.0"

register_envs()

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "Example",
    "HFTokenizer",
    "Task",
    "TextGenEnv",
    "TextGenVectorEnv",
    "Tokenizer",
    "__version__",
    "list_envs",
    "load_tokenizer",
    "make_task",
    "register_envs",
    "register_reward",
    "register_task",
    "rewards",
]
