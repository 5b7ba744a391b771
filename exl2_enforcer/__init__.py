"""exl2_enforcer: JSON Schema, regex and choice constraints for ExLlamaV2, exact to the byte, with hang protection.

The public facade::

    from exl2_enforcer import TokenVocabulary, compile_json_schema, Matcher

    vocab = TokenVocabulary.from_file("/path/to/model")        # exact token bytes from tokenizer.json
    grammar = compile_json_schema({"type": "integer"}, vocab)  # cached, shared by every matcher
    m = Matcher(grammar)                                       # one per generation
    bitmask = allocate_bitmask(logits_width)                   # int32 words; library="torch" for a tensor
    fill_bitmask(m, bitmask, logits_width)                     # then apply_bitmask(logits, bitmask)

The ExLlamaV2 filters live in :mod:`exl2_enforcer.contrib.exllamav2` (that import needs exllamav2).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("exl2-enforcer")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from exl2_enforcer.bitmask import allocate_bitmask, apply_bitmask, bitmask_words, check_bitmask, fill_bitmask
from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import (
    BitmaskError,
    EnforcerError,
    MaskTimeout,
    RegexError,
    SchemaError,
    TokenRejected,
    UnknownFormatError,
    VocabularyError,
)
from exl2_enforcer.grammar import CompiledGrammar, compile_choice, compile_json_schema
from exl2_enforcer.grammar import compile_regex_constraint as compile_regex
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import TokenVocabulary, default_vocabulary
from exl2_enforcer.watchdog import GuardedMatcher, GuardPolicy

__all__ = [
    "__version__",
    "compile_json_schema", "compile_regex", "compile_choice", "CompiledGrammar",
    "Matcher", "TokenVocabulary", "default_vocabulary", "SchemaOptions",
    "allocate_bitmask", "fill_bitmask", "apply_bitmask", "bitmask_words", "check_bitmask",
    "GuardPolicy", "GuardedMatcher",
    "EnforcerError", "SchemaError", "RegexError", "VocabularyError", "TokenRejected", "BitmaskError",
    "MaskTimeout", "UnknownFormatError",
]
