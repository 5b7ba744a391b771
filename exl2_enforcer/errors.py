"""Exception types shared by the whole package.

Every error names the place that is wrong: a file, a JSON pointer into a
schema, a position in a pattern, a token id or a parameter.
"""

from __future__ import annotations

from collections.abc import Iterable


class EnforcerError(ValueError):
    """Base class of all errors raised by exl2_enforcer for bad input."""


class VocabularyError(EnforcerError):
    """A tokenizer file or object cannot be turned into an exact byte vocabulary."""


class SchemaError(EnforcerError):
    """A JSON Schema is invalid, unsupported, or admits no value.

    ``pointer`` is the JSON pointer (RFC 6901) of the offending subschema, a place in the
    schema document as the user gave it (also when the compiler rewrote that schema).
    """

    def __init__(self, message: str, pointer: str = "", keyword: str | None = None) -> None:
        self.pointer = pointer
        self.keyword = keyword
        #: the message without its location, for re-raising at another pointer
        self.message = message
        where = f" at {pointer or '/'}"
        super().__init__(f"{message}{where}" if pointer is not None else message)


class RegexError(EnforcerError):
    """A regular expression is malformed or uses an unsupported feature.

    ``position`` is the 0-based index into ``pattern`` where the problem is.
    """

    def __init__(self, message: str, pattern: str, position: int) -> None:
        self.pattern = pattern
        self.position = position
        super().__init__(f"{message} at position {position} in pattern {pattern!r}")


class TokenRejected(EnforcerError):
    """A token was fed whose bytes the constraint does not allow; the state is unchanged."""

    def __init__(self, token_id: int, message: str) -> None:
        self.token_id = token_id
        super().__init__(f"token {token_id}: {message}")


class BitmaskError(EnforcerError, TypeError):
    """A bitmask or logits buffer has the wrong library, dtype, shape or width for the call.

    Also a :class:`TypeError`, since most such mistakes are a wrong buffer type.
    """


class CliError(Exception):
    """A command-line problem the user can fix: printed as one line on stderr, exits with ``code``.

    Not an :class:`EnforcerError`: it is raised only by ``exl2_enforcer.cli`` (``code`` is one
    of ``exl2_enforcer.cli.common.ExitCode``; 2 = usage error).
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class MaskTimeout(EnforcerError):
    """A mask computation ran past its time budget (raised between chunks of work)."""


class UnknownFormatError(EnforcerError):
    """A JSON Schema ``format`` name the engine has no exact fragment for.

    ``name`` is the format; ``supported`` lists the names that are.
    """

    def __init__(self, name: str, supported: Iterable[str]) -> None:
        self.name = name
        self.supported = sorted(supported)
        super().__init__(f"unsupported format {name!r}; supported: {', '.join(self.supported)}")


class PolicyError(EnforcerError):
    """A :class:`GuardPolicy` field has a bad type or value; ``field`` names it."""

    def __init__(self, name: str, message: str) -> None:
        self.field = name
        super().__init__(f"GuardPolicy.{name}: {message}")
