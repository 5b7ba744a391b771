"""ExLlamaV2 (0.3.x) adapter: filters for ``ExLlamaV2DynamicGenerator`` jobs and the guarded batch.

Importing this package imports ``exllamav2`` (which builds its CUDA extension on first import);
without CUDA, without ``CUDA_HOME`` or with an exllamav2 other than 0.3.x it raises one clear
ImportError instead (:mod:`exl2_enforcer.contrib.requirements`).

* :mod:`.filter` -- :class:`JsonSchemaFilter`, :class:`RegexFilter`, :class:`ChoiceFilter`
  (the ``ExLlamaV2Filter`` protocol);
* :mod:`.support` -- exllamav2-free helpers of the filters (vocabulary tables, state caches);
* :mod:`.guarded_mode` -- the watchdog side of a filter (``policy=``);
* :mod:`.guarded` -- :class:`GuardedGenerator` and :func:`generate_json`.
"""

from exl2_enforcer.contrib.requirements import require_exllamav2

require_exllamav2()  # before exllamav2 is imported: its failed CUDA build prints a long traceback

from exl2_enforcer.contrib.exllamav2.filter import ChoiceFilter, JsonSchemaFilter, RegexFilter  # noqa: E402
from exl2_enforcer.contrib.exllamav2.guarded import (  # noqa: E402
    END_REASONS,
    GuardedGenerator,
    GuardedResult,
    generate_json,
)

__all__ = ["JsonSchemaFilter", "RegexFilter", "ChoiceFilter", "GuardedGenerator", "GuardedResult",
           "generate_json", "END_REASONS"]
