"""A local Ray instance for the tests and the benchmark of fastspec.integrations.ray."""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator


@contextlib.contextmanager
def local_ray(directory: str | os.PathLike, **data_context: Any) -> Iterator[None]:
    """``ray.init(num_cpus=2)`` started from ``directory``, with progress bars off and the
    given ``ray.data.DataContext`` fields set; all restored, and Ray shut down, on exit."""
    import ray

    # Ray kills idle workers beyond one per CPU, and a shuffle's map and reduce tasks run in
    # different worker pools, so each aggregation would start (and import torch in) fresh
    # workers; keeping a few alive makes every aggregation after the first take about a second.
    # Ray puts the driver's working directory on its workers' sys.path: started in a source
    # checkout, the workers would import its uninstalled fastspec (no _C), not the installed one.
    with contextlib.chdir(directory):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 _system_config={"num_workers_soft_limit": 6, "idle_worker_killing_time_threshold_ms": 600_000})
    try:
        with warnings.catch_warnings():  # DataContext's first use re-sets its own deprecated fields
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ray.data.DataContext.get_current()
        wanted = {"enable_progress_bars": False, **data_context}
        saved = {name: getattr(context, name) for name in wanted}
        for name, value in wanted.items():
            setattr(context, name, value)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(context, name, value)
    finally:
        ray.shutdown()
