"""Project tasks (invoke). `invoke --list` shows them."""

from invoke import Collection

from bintest.bootfd import tasks as bootfd_tasks
from lab import tasks as lab_tasks

import tasks_core

ns = Collection.from_module(tasks_core)
for mod in (lab_tasks, bootfd_tasks, __import__("tasks_boot")):
    for t in Collection.from_module(mod).tasks.values():
        ns.add_task(t)
