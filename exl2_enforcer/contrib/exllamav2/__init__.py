"""ExLlamaV2 (0.3.x) adapter: filters for ``ExLlamaV2DynamicGenerator`` jobs and the guarded batch.

Importing this package imports ``exllamav2`` (which builds its CUDA extension on first import).

* :mod:`.filter` -- :class:`JsonSchemaFilter`, :class:`RegexFilter`, :class:`ChoiceFilter`
  (the ``ExLlamaV2Filter`` protocol);
* :mod:`.support` -- exllamav2-free helpers of the filters (vocabulary tables, state caches);
* :mod:`.guarded_mode` -- the watchdog side of a filter (``policy=``);
* :mod:`.guarded` -- :class:`GuardedGenerator` and :func:`generate_json`.
"""

from exl2_enforcer.contrib.exllamav2.filter import ChoiceFilter, JsonSchemaFilter, RegexFilter
from exl2_enforcer.contrib.exllamav2.guarded import END_REASONS, GuardedGenerator, GuardedResult, generate_json

__all__ = ["JsonSchemaFilter", "RegexFilter", "ChoiceFilter", "GuardedGenerator", "GuardedResult",
           "generate_json", "END_REASONS"]
