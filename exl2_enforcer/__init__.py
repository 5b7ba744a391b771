"""exl2_enforcer: fast JSON-Schema / regex / choice constraints for ExLlamaV2, with hang protection."""

__version__ = "0.1.0"
