"""The JSON Schema compiler: keywords, containers, allOf merging."""
