"""Tasks: how inputs are built, which head, which metrics, how to decode. One file per task kind."""

from lmtune.tasks import classification  # noqa: F401  (registers the task)
from lmtune.tasks.base import Task, TaskModel, build_task, registered_tasks

__all__ = ["Task", "TaskModel", "build_task", "registered_tasks"]
