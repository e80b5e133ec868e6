"""Project tasks (invoke). `invoke --list` shows them."""

from invoke import Collection

import tasks_boot
import tasks_core
import tasks_qemu
from bintest.bootfd import tasks as bootfd_tasks
from lab import tasks as lab_tasks

ns = Collection.from_module(tasks_core)
for mod in (lab_tasks, bootfd_tasks, tasks_boot, tasks_qemu):
    for t in Collection.from_module(mod).tasks.values():
        ns.add_task(t)
