"""exl2_enforcer: JSON Schema, regex and choice constraints for ExLlamaV2, exact to the byte, with hang protection.

The public facade::

    from exl2_enforcer import TokenVocabulary, compile_json_schema, Matcher

    vocab = TokenVocabulary.from_file("/path/to/model")        # exact token bytes from tokenizer.json
    grammar = compile_json_schema({"type": "integer"}, vocab)  # cached, shared by every matcher
    m = Matcher(grammar)                                       # one per generation

The ExLlamaV2 filters live in :mod:`exl2_enforcer.contrib.exllamav2` (that import needs exllamav2).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("exl2-enforcer")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import EnforcerError, RegexError, SchemaError, TokenRejected, VocabularyError
from exl2_enforcer.grammar import CompiledGrammar, compile_choice, compile_json_schema
from exl2_enforcer.grammar import compile_regex_constraint as compile_regex
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import TokenVocabulary, default_vocabulary
from exl2_enforcer.watchdog import GuardedMatcher, GuardPolicy

__all__ = [
    "__version__",
    "compile_json_schema", "compile_regex", "compile_choice", "CompiledGrammar",
    "Matcher", "TokenVocabulary", "default_vocabulary", "SchemaOptions",
    "GuardPolicy", "GuardedMatcher",
    "EnforcerError", "SchemaError", "RegexError", "VocabularyError", "TokenRejected",
]
