"""Tasks: how inputs are built, which head, which metrics, how to decode. One file per task kind.

To add one: write `tasks/<name>.py` with a config class (`name: Literal["<name>"]`) and a `Task` subclass
decorated with `@register_task`, then import it below.
"""

# Each import registers one task.
from lmtune.tasks import classification, instruction, multiple_choice, token_classification, translation  # noqa: E402,F401
from lmtune.tasks.base import TASKS, Task, TaskModel, register_task

__all__ = ["TASKS", "Task", "TaskModel", "register_task"]
